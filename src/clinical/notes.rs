//! Clinical note text from DocumentReference and DiagnosticReport.
//!
//! Rules:
//! - `DocumentReference.content.attachment` and `DiagnosticReport.presentedForm`
//!   with inline base64 `data` and content type `text/plain` or `text/html`
//!   (also `application/xhtml+xml`) become notes; HTML is reduced to text
//!   (tags dropped, block elements become line breaks, `script`/`style`
//!   content removed, entities decoded). Text is decoded as UTF-8 (invalid
//!   bytes replaced), or as Latin-1 when the content type says
//!   `charset=iso-8859-1`/`latin1`/`windows-1252`.
//! - `DiagnosticReport.conclusion` is a note of its own kind.
//! - An attachment with only a `url` is listed in `not_retrieved` (the FHIR
//!   client may fetch it later); so is inline data of another content type
//!   (PDF, RTF) or with no content type — it is not guessed.
//! - DocumentReference `entered-in-error` and DiagnosticReport
//!   `entered-in-error`/`cancelled` are skipped. Notes dated after the index
//!   date are skipped; undated notes are kept (nothing says they are later).
//! - Dates: DocumentReference `date`, else `context.period.start`, else the
//!   attachment's `creation`; DiagnosticReport `effective[x]`, else `issued`.

use chrono::NaiveDate;
use fhir_sdk::r4b::codes::{DiagnosticReportStatus, DocumentReferenceStatus};
use fhir_sdk::r4b::resources::{DiagnosticReport, DiagnosticReportEffective, DocumentReference};
use fhir_sdk::r4b::types::{Attachment, CodeableConcept};
use serde::Serialize;

use super::dates;
use super::provenance::SourceRef;
use super::timeline::SkippedValue;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoteKind {
    /// `DocumentReference.content.attachment`.
    Document,
    /// `DiagnosticReport.presentedForm`.
    ReportPresentedForm,
    /// `DiagnosticReport.conclusion`.
    ReportConclusion,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Note {
    pub kind: NoteKind,
    pub source: SourceRef,
    pub date: Option<NaiveDate>,
    /// Document type / report code text, or the attachment title.
    pub title: Option<String>,
    pub content_type: Option<String>,
    pub text: String,
}

/// An attachment whose text we do not have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotRetrieved {
    pub kind: NoteKind,
    pub source: SourceRef,
    pub date: Option<NaiveDate>,
    pub title: Option<String>,
    pub content_type: Option<String>,
    pub url: Option<String>,
    pub reason: String,
}

#[derive(Debug, Default)]
pub(crate) struct NoteExtraction {
    pub notes: Vec<Note>,
    pub not_retrieved: Vec<NotRetrieved>,
}

struct Context<'a> {
    kind: NoteKind,
    source: &'a SourceRef,
    date: Option<NaiveDate>,
    title: Option<String>,
}

pub(crate) fn extract(
    documents: &[DocumentReference],
    reports: &[DiagnosticReport],
    index_date: NaiveDate,
    skipped: &mut Vec<SkippedValue>,
) -> NoteExtraction {
    let mut out = NoteExtraction::default();
    let after_index = |d: Option<NaiveDate>| d.filter(|d| *d > index_date);

    for (position, doc) in documents.iter().enumerate() {
        let source = SourceRef::new("DocumentReference", doc.id.as_deref(), position);
        if doc.status == DocumentReferenceStatus::EnteredInError {
            skipped.push(SkippedValue::new(
                source,
                None,
                "document status is entered-in-error",
            ));
            continue;
        }
        let date = doc.date.as_ref().and_then(dates::instant_date).or_else(|| {
            let period = doc.context.as_ref()?.period.as_ref()?;
            period.start.as_ref().and_then(dates::first_day)
        });
        let title = doc
            .r#type
            .as_ref()
            .and_then(concept_text)
            .or_else(|| doc.description.clone());
        for content in doc.content.iter().flatten() {
            let attachment = &content.attachment;
            let date = date.or_else(|| attachment.creation.as_ref().and_then(dates::first_day));
            if let Some(d) = after_index(date) {
                skipped.push(SkippedValue::new(
                    source.clone(),
                    None,
                    format!("document dated {d}, after the index date {index_date}"),
                ));
                continue;
            }
            let ctx = Context {
                kind: NoteKind::Document,
                source: &source,
                date,
                title: title.clone().or_else(|| attachment.title.clone()),
            };
            read_attachment(attachment, &ctx, &mut out);
        }
    }

    for (position, report) in reports.iter().enumerate() {
        let source = SourceRef::new("DiagnosticReport", report.id.as_deref(), position);
        if matches!(
            report.status,
            DiagnosticReportStatus::EnteredInError | DiagnosticReportStatus::Cancelled
        ) {
            skipped.push(SkippedValue::new(
                source,
                None,
                format!("report status is {}", report.status),
            ));
            continue;
        }
        let date = match &report.effective {
            Some(DiagnosticReportEffective::DateTime(dt)) => dates::first_day(dt),
            Some(DiagnosticReportEffective::Period(p)) => {
                p.start.as_ref().and_then(dates::first_day)
            }
            None => None,
        }
        .or_else(|| report.issued.as_ref().and_then(dates::instant_date));
        if let Some(d) = after_index(date) {
            skipped.push(SkippedValue::new(
                source,
                None,
                format!("report dated {d}, after the index date {index_date}"),
            ));
            continue;
        }
        let title = concept_text(&report.code);
        if let Some(conclusion) = report.conclusion.as_deref().map(str::trim)
            && !conclusion.is_empty()
        {
            out.notes.push(Note {
                kind: NoteKind::ReportConclusion,
                source: source.clone(),
                date,
                title: title.clone(),
                content_type: None,
                text: conclusion.to_owned(),
            });
        }
        for attachment in report.presented_form.iter().flatten() {
            let ctx = Context {
                kind: NoteKind::ReportPresentedForm,
                source: &source,
                date,
                title: title.clone().or_else(|| attachment.title.clone()),
            };
            read_attachment(attachment, &ctx, &mut out);
        }
    }
    out
}

fn concept_text(cc: &CodeableConcept) -> Option<String> {
    cc.text
        .clone()
        .or_else(|| cc.coding.iter().flatten().find_map(|c| c.display.clone()))
}

fn read_attachment(attachment: &Attachment, ctx: &Context<'_>, out: &mut NoteExtraction) {
    let content_type = attachment.content_type.clone();
    let not_retrieved = |reason: String| NotRetrieved {
        kind: ctx.kind,
        source: ctx.source.clone(),
        date: ctx.date,
        title: ctx.title.clone(),
        content_type: content_type.clone(),
        url: attachment.url.clone(),
        reason,
    };
    let Some(data) = &attachment.data else {
        let reason = if attachment.url.is_some() {
            "attachment is a url only; not retrieved".to_owned()
        } else {
            "attachment has neither data nor url".to_owned()
        };
        out.not_retrieved.push(not_retrieved(reason));
        return;
    };
    let Some(ct) = content_type.as_deref() else {
        out.not_retrieved.push(not_retrieved(
            "attachment has data but no contentType".to_owned(),
        ));
        return;
    };
    let (mime, charset) = parse_content_type(ct);
    let bytes: &[u8] = &data.0;
    let decoded = match charset.as_deref() {
        Some("iso-8859-1" | "latin1" | "latin-1" | "windows-1252") => {
            bytes.iter().map(|b| char::from(*b)).collect()
        }
        _ => String::from_utf8_lossy(bytes).into_owned(),
    };
    let text = match mime.as_str() {
        "text/plain" => normalise_whitespace(&decoded, true),
        "text/html" | "application/xhtml+xml" => html_to_text(&decoded),
        other => {
            out.not_retrieved.push(not_retrieved(format!(
                "content type {other} is not read as text"
            )));
            return;
        }
    };
    if text.is_empty() {
        out.not_retrieved
            .push(not_retrieved("attachment text is empty".to_owned()));
        return;
    }
    out.notes.push(Note {
        kind: ctx.kind,
        source: ctx.source.clone(),
        date: ctx.date,
        title: ctx.title.clone(),
        content_type,
        text,
    });
}

/// `text/html; charset=UTF-8` -> (`text/html`, Some(`utf-8`)).
fn parse_content_type(ct: &str) -> (String, Option<String>) {
    let mut parts = ct.split(';');
    let mime = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let charset = parts.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k.trim().eq_ignore_ascii_case("charset"))
            .then(|| v.trim().trim_matches('"').to_ascii_lowercase())
    });
    (mime, charset)
}

/// Elements after which text continues on a new line.
const BLOCK_TAGS: &[&str] = &[
    "address",
    "article",
    "aside",
    "blockquote",
    "br",
    "dd",
    "div",
    "dl",
    "dt",
    "footer",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hr",
    "li",
    "main",
    "ol",
    "p",
    "pre",
    "section",
    "table",
    "tbody",
    "thead",
    "tfoot",
    "title",
    "tr",
    "ul",
];

/// Reduce HTML to readable text without an HTML parser: good enough for
/// EHR notes, which are simple markup. Never panics on malformed input.
pub fn html_to_text(html: &str) -> String {
    let mut text = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        text.push_str(&decode_entities(&rest[..lt]));
        rest = &rest[lt..];
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = after.find("-->").map_or("", |end| &after[end + 3..]);
            continue;
        }
        let Some(gt) = rest.find('>') else {
            // A lone '<' in text: keep it literally.
            text.push_str(&decode_entities(rest));
            rest = "";
            break;
        };
        let tag = &rest[1..gt];
        rest = &rest[gt + 1..];
        let closing = tag.starts_with('/');
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_lowercase())
            .collect();
        if !closing && (name == "script" || name == "style") {
            // Skip to the matching close tag (case-insensitive).
            let lower = rest.to_ascii_lowercase();
            let close = format!("</{name}");
            rest = match lower.find(&close) {
                Some(i) => rest[i..].find('>').map_or("", |j| &rest[i + j + 1..]),
                None => "",
            };
            continue;
        }
        if BLOCK_TAGS.contains(&name.as_str()) {
            text.push('\n');
        } else if name == "td" || name == "th" {
            text.push(' ');
        }
    }
    text.push_str(&decode_entities(rest));
    normalise_whitespace(&text, false)
}

/// Collapse runs of spaces within lines and trim lines. Plain text keeps at
/// most one empty line between paragraphs; HTML (whose line breaks come from
/// both closing and opening block tags) keeps none.
fn normalise_whitespace(text: &str, keep_blank_lines: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank_run = 0;
    for line in text.lines() {
        let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
        if line.is_empty() {
            blank_run += 1;
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
            if keep_blank_lines && blank_run > 0 {
                out.push('\n');
            }
        }
        blank_run = 0;
        out.push_str(&line);
    }
    out
}

/// Decode `&amp;`, `&#39;`, `&#x2014;` and a few common named entities.
/// Unknown entities are left as written.
fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        // Entities are short; look for ';' within 12 characters.
        let semi = rest
            .char_indices()
            .take(12)
            .find(|(_, c)| *c == ';')
            .map(|(i, _)| i);
        let decoded = semi.and_then(|semi| decode_entity(&rest[1..semi]).map(|c| (c, semi)));
        match decoded {
            Some((c, semi)) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn decode_entity(name: &str) -> Option<char> {
    if let Some(num) = name.strip_prefix('#') {
        let code = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => num.parse().ok()?,
        };
        return Some(char::from_u32(code).unwrap_or('\u{FFFD}'));
    }
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => ' ',
        "ndash" => '–',
        "mdash" => '—',
        "hellip" => '…',
        "deg" => '°',
        "plusmn" => '±',
        "micro" => 'µ',
        "times" => '×',
        "le" => '≤',
        "ge" => '≥',
        "middot" => '·',
        "bull" => '•',
        "lsquo" => '‘',
        "rsquo" => '’',
        "ldquo" => '“',
        "rdquo" => '”',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_tags_are_dropped_and_blocks_become_lines() {
        let html = "<html><head><title>Progress note</title><style>p{color:red}</style></head>\
            <body><h1>Oncology</h1><p>Weight &amp; appetite <b>down</b>;&nbsp;CRP &gt; 10.</p>\
            <!-- internal --><script>alert('x')</script><ul><li>fatigue</li><li>early satiety</li></ul>\
            <p>Temp 37&#46;2 &#x2103; &unknown; 3 &lt 4</p></body></html>";
        let text = html_to_text(html);
        assert_eq!(
            text,
            "Progress note\nOncology\nWeight & appetite down; CRP > 10.\nfatigue\nearly satiety\n\
             Temp 37.2 ℃ &unknown; 3 &lt 4"
        );
    }

    #[test]
    fn malformed_html_does_not_panic() {
        assert_eq!(html_to_text("a < b and <p"), "a < b and <p");
        assert_eq!(html_to_text("<script>never closed"), "");
        assert_eq!(html_to_text("x<!-- open comment"), "x");
        assert_eq!(html_to_text("&#xZZ; &#99999999; é"), "&#xZZ; \u{FFFD} é");
    }

    #[test]
    fn content_type_parameters() {
        assert_eq!(
            parse_content_type("text/HTML; charset=\"ISO-8859-1\""),
            ("text/html".to_owned(), Some("iso-8859-1".to_owned()))
        );
        assert_eq!(
            parse_content_type("text/plain"),
            ("text/plain".to_owned(), None)
        );
    }

    #[test]
    fn whitespace_is_normalised() {
        assert_eq!(
            normalise_whitespace("  a   b \n\n\n\n c\t d \n", true),
            "a b\n\nc d"
        );
        assert_eq!(
            normalise_whitespace("  a   b \n\n\n\n c\t d \n", false),
            "a b\nc d"
        );
    }
}
