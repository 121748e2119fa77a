//! Feedback (CDS Hooks 2.0 §Feedback): stored, linked to the card, idempotent.

use serde_json::{Value, json};

use crate::helpers::{fixture, spawn_app};

#[tokio::test]
async fn feedback_is_stored_once_even_when_sent_twice() {
    let app = spawn_app().await;
    let body: Value = app
        .post_hook("cachexia-risk", &fixture("hooks/cachexia-full.json"))
        .await
        .json()
        .await
        .unwrap();
    let card = body["cards"][0]["uuid"].as_str().unwrap().to_owned();
    let suggestion = body["cards"][0]["suggestions"][0]["uuid"]
        .as_str()
        .unwrap()
        .to_owned();
    let fb = json!({"feedback": [
        {"card": card, "outcome": "accepted", "acceptedSuggestions": [{"id": suggestion}],
         "outcomeTimestamp": "2026-11-20T10:00:00Z"}
    ]});
    assert_eq!(app.post_feedback("cachexia-risk", &fb).await.status(), 200);
    assert_eq!(app.post_feedback("cachexia-risk", &fb).await.status(), 200);
    assert_eq!(app.db.count("feedback").await, 1);
    let stored = app
        .db
        .store
        .feedback_for_card(card.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].outcome, "accepted");
    assert_eq!(stored[0].accepted_suggestions[0]["id"], suggestion);

    // An override is a different piece of feedback.
    let over = json!({"feedback": [
        {"card": card, "outcome": "overridden",
         "overrideReason": {"reason": body["cards"][0]["overrideReasons"][0], "userComment": "seen by dietitian"},
         "outcomeTimestamp": "2026-11-20T10:05:00Z"}
    ]});
    assert_eq!(
        app.post_feedback("cachexia-risk", &over).await.status(),
        200
    );
    assert_eq!(app.db.count("feedback").await, 2);
    app.cleanup().await;
}

#[tokio::test]
async fn malformed_feedback_is_400_naming_the_field() {
    let app = spawn_app().await;
    let resp = app
        .post_feedback(
            "cachexia-risk",
            &json!({"feedback": [{"card": "x", "outcome": "accepted", "outcomeTimestamp": "2026-11-20T10:00:00Z"}]}),
        )
        .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["field"],
        "feedback[0].card"
    );
    let resp = app
        .post_feedback("no-such-service", &json!({"feedback": []}))
        .await;
    assert_eq!(resp.status(), 404);
    app.cleanup().await;
}
