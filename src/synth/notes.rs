//! Clinical notes: templated but varied oncology notes whose symptom
//! sentences are driven by the latents, with negations, hedges, distractors
//! and boilerplate. See `docs/synthetic-cohort.md` ("Notes") for the rates.
//!
//! Each symptom is *present* or not (a patient-level fact drawn from the
//! latents); each note then *documents* it affirmatively, hedged, negated or
//! not at all, with probabilities that make the text an imperfect witness:
//! present symptoms go unmentioned a third of the time and are occasionally
//! denied; absent ones are sometimes asserted.

use super::model::Truth;
use super::observe::{NoteSink, stage_number};
use super::sample::{SynthRng, bernoulli, int, pick, poisson, sigmoid, weighted};
use crate::clinical::{CancerType, Sex};

/// Symptoms the notes may mention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Symptom {
    AppetiteLoss,
    EarlySatiety,
    Nausea,
    TasteChange,
    Fatigue,
    WeightLossNoticed,
    Dysphagia,
    Weakness,
}

pub(crate) const SYMPTOMS: [Symptom; 8] = [
    Symptom::AppetiteLoss,
    Symptom::EarlySatiety,
    Symptom::Nausea,
    Symptom::TasteChange,
    Symptom::Fatigue,
    Symptom::WeightLossNoticed,
    Symptom::Dysphagia,
    Symptom::Weakness,
];

/// Probability that the symptom is present, from the latents.
pub(crate) fn symptom_probability(s: Symptom, t: &Truth) -> f64 {
    let l = &t.latents;
    let upper_gi = match t.cancer_type {
        CancerType::Pancreas | CancerType::Gastric => 1.0,
        CancerType::Oesophageal => 0.5,
        _ => 0.0,
    };
    let head_neck = f64::from(u8::from(t.cancer_type == CancerType::HeadAndNeck));
    match s {
        Symptom::AppetiteLoss => sigmoid(-1.4 + 2.6 * l.anorexia),
        Symptom::EarlySatiety => sigmoid(-2.5 + 2.0 * l.anorexia + 1.0 * upper_gi),
        Symptom::Nausea => sigmoid(-2.3 + 1.6 * l.anorexia + 0.4 * upper_gi),
        Symptom::TasteChange => sigmoid(-2.7 + 1.7 * l.anorexia + 0.5 * head_neck),
        Symptom::Fatigue => sigmoid(-0.6 + 0.6 * l.inflammation + 0.6 * l.frailty),
        Symptom::WeightLossNoticed => sigmoid(-2.2 + 0.55 * t.loss_before_index_6m),
        Symptom::Dysphagia if l.obstruction > 0.0 => sigmoid(-3.0 + 4.5 * l.obstruction),
        Symptom::Dysphagia => 0.02,
        Symptom::Weakness => sigmoid(-2.3 + 0.7 * l.frailty - 0.6 * l.muscle_reserve),
    }
}

/// How one note documents one symptom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mention {
    Affirmed,
    Hedged,
    Negated,
    Silent,
}

fn mention(rng: &mut SynthRng, present: bool) -> Mention {
    if present {
        weighted(
            rng,
            &[
                (Mention::Affirmed, 0.55),
                (Mention::Hedged, 0.15),
                (Mention::Negated, 0.03),
                (Mention::Silent, 0.27),
            ],
        )
    } else {
        weighted(
            rng,
            &[
                (Mention::Affirmed, 0.02),
                (Mention::Hedged, 0.03),
                (Mention::Negated, 0.30),
                (Mention::Silent, 0.65),
            ],
        )
    }
}

fn templates(s: Symptom, m: Mention) -> &'static [&'static str] {
    use Mention::*;
    use Symptom::*;
    match (s, m) {
        (_, Silent) => &[],
        (AppetiteLoss, Affirmed) => &[
            "Reports poor appetite for {dur}.",
            "Appetite has been markedly decreased over the past {dur}.",
            "{He} is eating about half of {his} usual meals.",
            "Anorexia noted.",
            "Pt c/o decreased appetite x {dur}.",
            "Has lost interest in food; skipping meals.",
        ],
        (AppetiteLoss, Hedged) => &[
            "Appetite may be somewhat reduced.",
            "Possibly eating a little less than usual, per family.",
            "Appetite \"not quite what it was\", though {he} is unsure.",
        ],
        (AppetiteLoss, Negated) => &[
            "Appetite is good.",
            "Denies loss of appetite.",
            "Eating well, no change in appetite.",
            "No anorexia.",
        ],
        (EarlySatiety, Affirmed) => &[
            "Reports early satiety.",
            "Feels full after only a few bites.",
            "Complains of early satiety and postprandial fullness.",
        ],
        (EarlySatiety, Hedged) => &["Some early satiety at times, unclear if new."],
        (EarlySatiety, Negated) => &["Denies early satiety.", "No early satiety."],
        (Nausea, Affirmed) => &[
            "Intermittent nausea, worse in the mornings.",
            "Reports nausea with meals.",
            "Nausea most days, occasional emesis.",
        ],
        (Nausea, Hedged) => &["Occasional mild queasiness."],
        (Nausea, Negated) => &["Denies nausea or vomiting.", "No nausea.", "No N/V."],
        (TasteChange, Affirmed) => &[
            "Notes that food tastes different.",
            "Reports a metallic taste; food is unappealing.",
        ],
        (TasteChange, Hedged) => &["Possibly some change in taste."],
        (TasteChange, Negated) => &["No taste changes."],
        (Fatigue, Affirmed) => &[
            "Fatigue limits daily activities.",
            "Reports feeling tired most of the day.",
            "Significant fatigue; naps twice daily.",
        ],
        (Fatigue, Hedged) => &["Mild fatigue, attributes it to poor sleep."],
        (Fatigue, Negated) => &["Denies fatigue.", "Energy level is good."],
        (WeightLossNoticed, Affirmed) => &[
            "Clothes have become loose.",
            "Patient notes unintentional weight loss over {dur}.",
            "Family has noticed {he} looks thinner.",
            "Had to tighten {his} belt by two notches.",
        ],
        (WeightLossNoticed, Hedged) => {
            &["Thinks {he} may have lost some weight, not sure how much."]
        }
        (WeightLossNoticed, Negated) => {
            &["Denies weight loss.", "Weight has been stable per patient."]
        }
        (Dysphagia, Affirmed) => &[
            "Reports difficulty swallowing solids.",
            "Progressive dysphagia, now tolerating soft foods only.",
        ],
        (Dysphagia, Hedged) => &["Occasional sensation of food sticking."],
        (Dysphagia, Negated) => &["No dysphagia or odynophagia."],
        (Weakness, Affirmed) => &[
            "Reports generalized weakness and difficulty climbing stairs.",
            "Notes muscle weakness in both legs.",
        ],
        (Weakness, Hedged) => &["Feels a bit weaker than before."],
        (Weakness, Negated) => &["Denies weakness."],
    }
}

const DURATIONS: [&str; 6] = [
    "two weeks",
    "3 weeks",
    "about a month",
    "several weeks",
    "2 months",
    "3 months",
];

/// Sentences with nothing to do with cachexia (or deliberately misleading:
/// someone else's appetite, a past illness).
const DISTRACTORS: [&str; 14] = [
    "Spouse accompanies the patient today and is supportive.",
    "{His} wife mentions that her own appetite has been poor since her surgery.",
    "Influenza vaccine is up to date.",
    "Lives with family, independent in ADLs.",
    "Drinks alcohol socially, 1-2 drinks per week.",
    "Had COVID-19 last year with loss of taste that has since resolved.",
    "Interested in a clinical trial if eligible.",
    "Denies fever, chills or night sweats.",
    "No chest pain or palpitations.",
    "No headaches or vision changes.",
    "Retired teacher; enjoys gardening.",
    "Reviewed outside records and imaging.",
    "Questions answered to the patient's satisfaction.",
    "Lost 10 lb after a hernia repair several years ago, regained since.",
];

fn cancer_phrase(t: CancerType, icd10: &str) -> &'static str {
    match t {
        CancerType::Lung => "non-small cell lung cancer",
        CancerType::Pancreas => "pancreatic adenocarcinoma",
        CancerType::Colorectal => "colorectal adenocarcinoma",
        CancerType::Gastric => "gastric adenocarcinoma",
        CancerType::Oesophageal => "esophageal carcinoma",
        CancerType::Breast => "invasive ductal carcinoma of the breast",
        CancerType::Prostate => "prostate adenocarcinoma",
        CancerType::HeadAndNeck => "squamous cell carcinoma of the head and neck",
        _ => match icd10.get(..3) {
            Some("C64") => "renal cell carcinoma",
            Some("C67") => "urothelial carcinoma of the bladder",
            Some("C56") => "high-grade serous ovarian carcinoma",
            Some("C54") => "endometrial adenocarcinoma",
            Some("C43") => "melanoma",
            Some("C73") => "papillary thyroid carcinoma",
            _ => "malignancy",
        },
    }
}

fn fill(template: &str, rng: &mut SynthRng, sex: Sex) -> String {
    let (he, his) = if sex == Sex::Male {
        ("he", "his")
    } else {
        ("she", "her")
    };
    let mut s = template.replace("{He}", if sex == Sex::Male { "He" } else { "She" });
    s = s.replace("{His}", if sex == Sex::Male { "His" } else { "Her" });
    s = s.replace("{he}", he).replace("{his}", his);
    if s.contains("{dur}") {
        let dur = *pick(rng, DURATIONS.as_slice());
        s = s.replace("{dur}", dur);
    }
    s
}

/// Note kinds (LOINC document types).
const NOTE_TYPES: [(&str, &str); 3] = [
    ("11506-3", "Progress note"),
    ("34117-2", "History and physical note"),
    ("11488-4", "Consult note"),
];

/// Write 0..=4 notes for the patient. Returns how many.
pub(crate) fn documents(sink: &mut NoteSink<'_, '_>) -> usize {
    let truth = sink.truth().clone();
    let present: Vec<bool> = SYMPTOMS
        .iter()
        .map(|s| {
            let p = symptom_probability(*s, &truth);
            bernoulli(sink.rng(), p)
        })
        .collect();
    let burden = present.iter().filter(|p| **p).count() as f64;
    let s = stage_number(truth.stage);
    // Symptomatic and advanced patients are seen (and written about) more.
    let p_notes = sigmoid(0.3 + 0.45 * burden + 0.25 * s);
    if !bernoulli(sink.rng(), p_notes) {
        return 0;
    }
    let n = 1 + poisson(sink.rng(), 0.8).min(3) as usize;
    // Clinicians notice wasting on examination (temporal wasting) more when
    // muscle is low: the notes' one window on the muscle reserve.
    let smi_gap = (super::model::sarcopenia_cutoff(truth.sex) - truth.smi_at(0.0)) / 6.0;
    let wasting = bernoulli(sink.rng(), sigmoid(-2.5 + 1.2 * smi_gap));
    for k in 0..n {
        let day = if k == 0 {
            -int(sink.rng(), 0, 7)
        } else {
            -int(sink.rng(), 8, 60)
        };
        let note_type = *pick(sink.rng(), &NOTE_TYPES);
        let html = bernoulli(sink.rng(), 0.25);
        let text = note_text(sink.rng(), &truth, &present, wasting, note_type.1, html);
        let content_type = if html { "text/html" } else { "text/plain" };
        sink.document(day, note_type, content_type, &text);
    }
    n
}

fn note_text(
    rng: &mut SynthRng,
    t: &Truth,
    present: &[bool],
    wasting: bool,
    title: &str,
    html: bool,
) -> String {
    let sex = t.sex;
    let man = if sex == Sex::Male { "man" } else { "woman" };
    let stage_text = if bernoulli(rng, 0.5) {
        format!("stage {} ", roman(t.stage))
    } else {
        String::new()
    };
    let newly = *pick(
        rng,
        &["newly diagnosed", "recently diagnosed", "biopsy-proven"],
    );
    let reason = *pick(
        rng,
        &[
            "presents to discuss treatment options",
            "is seen for initial oncology consultation",
            "returns for follow-up of staging results",
            "presents with family to review the plan",
        ],
    );
    let mut hpi = vec![format!(
        "{}-year-old {man} with {newly} {stage_text}{} who {reason}.",
        t.age,
        cancer_phrase(t.cancer_type, t.icd10.0)
    )];
    for (symptom, &p) in SYMPTOMS.iter().zip(present) {
        let m = mention(rng, p);
        let options = templates(*symptom, m);
        if options.is_empty() {
            continue;
        }
        let template = *pick(rng, options);
        hpi.push(fill(template, rng, sex));
    }
    if t.cancer_type == CancerType::Lung && bernoulli(rng, 0.5) {
        hpi.push("Chronic cough, unchanged; mild exertional dyspnea.".to_owned());
    }
    let n_distract = int(rng, 1, 3);
    for _ in 0..n_distract {
        let d = *pick(rng, &DISTRACTORS);
        hpi.push(fill(d, rng, sex));
    }
    // Shuffle the symptom and distractor sentences after the opening line
    // (Fisher–Yates with the patient's stream).
    for i in (2..hpi.len()).rev() {
        let j = int(rng, 1, i as i64) as usize;
        hpi.swap(i, j);
    }
    let smoking = if matches!(
        t.cancer_type,
        CancerType::Lung | CancerType::HeadAndNeck | CancerType::Oesophageal
    ) && bernoulli(rng, 0.8)
    {
        *pick(
            rng,
            &[
                "Former smoker, 30 pack-years, quit 5 years ago.",
                "Current smoker, 1 ppd; counseled on cessation.",
                "Former smoker, quit 20 years ago.",
            ],
        )
    } else {
        *pick(
            rng,
            &[
                "Never smoker.",
                "Never smoker.",
                "Remote light smoking history.",
            ],
        )
    };
    let mut exam = vec![
        (*pick(
            rng,
            &[
                "Alert and oriented, in no acute distress.",
                "Well-appearing, NAD.",
                "Appears tired but comfortable.",
            ],
        ))
        .to_owned(),
        "Lungs clear to auscultation bilaterally.".to_owned(),
        (*pick(
            rng,
            &[
                "Abdomen soft, non-tender.",
                "Abdomen soft, mild epigastric tenderness.",
                "Abdomen benign.",
            ],
        ))
        .to_owned(),
    ];
    if wasting {
        exam.push(
            (*pick(
                rng,
                &[
                    "Temporal wasting noted.",
                    "Visible muscle wasting of the upper extremities.",
                    "Thin, with bitemporal wasting.",
                ],
            ))
            .to_owned(),
        );
    }
    let nutrition_referral = present[0] || present[1] || present[5];
    let mut plan = vec![
        (*pick(
            rng,
            &[
                "Discussed at multidisciplinary tumor board.",
                "Will proceed with treatment per NCCN guidelines.",
                "Staging to be completed before treatment decision.",
            ],
        ))
        .to_owned(),
    ];
    if nutrition_referral && bernoulli(rng, 0.6) || bernoulli(rng, 0.08) {
        plan.push("Referral to oncology dietitian.".to_owned());
    }
    plan.push(
        (*pick(
            rng,
            &[
                "Return to clinic in 2 weeks.",
                "Follow up after cycle 1.",
                "RTC 3 weeks.",
            ],
        ))
        .to_owned(),
    );

    let sections: [(&str, String); 4] = [
        ("HPI", hpi.join(" ")),
        ("Social history", smoking.to_owned()),
        ("Exam", exam.join(" ")),
        ("Assessment and plan", plan.join(" ")),
    ];
    if html {
        let mut out = format!("<html><body><h2>{title}</h2>");
        for (name, body) in &sections {
            out.push_str(&format!("<p><b>{name}:</b> {}</p>", escape_html(body)));
        }
        out.push_str("</body></html>");
        out
    } else {
        let mut out = format!("{}\n\n", title.to_uppercase());
        for (name, body) in &sections {
            out.push_str(&format!("{name}: {body}\n\n"));
        }
        out.trim_end().to_owned()
    }
}

fn roman(stage: crate::clinical::StageGroup) -> &'static str {
    use crate::clinical::StageGroup::*;
    match stage {
        Zero => "0",
        I => "I",
        II => "II",
        III => "III",
        IV => "IV",
    }
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
