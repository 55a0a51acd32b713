//! Automatic mail: RFC 3834 `Auto-Submitted`, the `Precedence` and
//! `X-Auto*` conventions, and out-of-office subjects and bodies in English,
//! French, German, Spanish, Italian, Dutch, Portuguese (and Polish).

use std::sync::LazyLock;

use regex::{Regex, RegexBuilder};

use super::address;
use super::view::View;
use super::FailedRecipient;

fn ci(pattern: &str) -> Regex {
    RegexBuilder::new(pattern)
        .case_insensitive(true)
        .build()
        .expect("valid pattern")
}

/// Subjects that only auto-replies have.
static AUTOREPLY_SUBJECT: LazyLock<Regex> = LazyLock::new(|| {
    ci(concat!(
        // English
        r"out of (?:the )?office|auto(?:matic|mated)?[- _]?(?:reply|response|answer|responder)|autoreply|",
        r"^\s*(?:\[?auto\]?:)|away from (?:my|the) (?:office|desk)|\bOOO\b|\bOOF\b|",
        r"i am (?:currently )?(?:away|out)|i'?m (?:currently )?(?:away|out of)|",
        // French
        r"r[ée]ponse automatique|message d'absence|absent(?:e)? du bureau|hors du bureau|",
        r"en cong[ée]s|je suis absent|absence du bureau|",
        // German
        r"abwesenheitsnotiz|automatische antwort|nicht im b(?:ü|ue)ro|au(?:ß|ss)er haus|abwesend|",
        r"ich bin (?:nicht|im urlaub)|automatische r(?:ü|ue)ckantwort|",
        // Spanish
        r"fuera de (?:la )?oficina|respuesta autom[áa]tica|estoy de vacaciones|ausencia|",
        // Italian
        r"fuori (?:ufficio|sede)|risposta automatica|sono in ferie|assente dall'ufficio|",
        // Dutch
        r"automatisch antwoord|afwezig|niet (?:op kantoor|aanwezig)|buiten kantoor|met vakantie|",
        // Portuguese
        r"fora do escrit[óo]rio|resposta autom[áa]tica|estou de f[ée]rias|ausente do escrit[óo]rio|",
        // Polish
        r"automatyczna odpowied"
    ))
});

/// Weaker subject words: only an auto-reply with another sign.
static WEAK_SUBJECT: LazyLock<Regex> = LazyLock::new(|| {
    ci(concat!(
        r"vacation|holiday|on leave|absence|absent|abwesenheit|urlaub|vacances|vacaciones|ferie|f[ée]rias|",
        r"vakantie|ausente|assente|thank you for (?:your )?(?:e-?mail|message|contacting)|merci pour votre (?:message|e-?mail)|",
        r"vielen dank für ihre (?:nachricht|e-?mail)|gracias por su (?:mensaje|correo)|grazie per (?:il suo|la sua) (?:messaggio|e-?mail)|",
        r"bedankt voor uw (?:bericht|e-?mail)|obrigad[oa] pela sua (?:mensagem|e-?mail)"
    ))
});

/// Out-of-office sentences at the start of a body.
static AUTOREPLY_BODY: LazyLock<Regex> = LazyLock::new(|| {
    ci(concat!(
        r"i (?:am|will be) (?:currently )?(?:out of (?:the )?office|away|on (?:vacation|holiday|leave|annual leave)|travel+ing|absent)|",
        r"i'?m (?:currently )?(?:out of (?:the )?office|away|on (?:vacation|holiday|leave))|",
        r"(?:limited|no) access to (?:my )?e-?mail|this is an auto(?:matic|mated)?(?:[- ]generated)? (?:reply|response|message)|",
        r"auto(?:matic|mated) (?:reply|response)|(?:upon|on|after) my return|until I return|",
        r"je suis (?:actuellement )?absent|absent(?:e)? du bureau|en cong[ée]s|r[ée]ponse automatique|",
        r"ich bin (?:derzeit |zurzeit )?(?:nicht im b(?:ü|ue)ro|abwesend|im urlaub|au(?:ß|ss)er haus)|automatische antwort|",
        r"estoy (?:fuera de la oficina|de vacaciones|ausente)|respuesta autom[áa]tica|",
        r"sono (?:fuori ufficio|in ferie|assente)|risposta automatica|",
        r"ik ben (?:afwezig|niet op kantoor|met vakantie)|automatisch antwoord|",
        r"estou (?:fora do escrit[óo]rio|de f[ée]rias|ausente)|resposta autom[áa]tica"
    ))
});

/// True when the message is automatic by its own headers or sender:
/// never answer it (RFC 3834 section 2).
pub(crate) fn is_automatic(view: &View) -> bool {
    let auto_submitted = view
        .header("auto-submitted")
        .is_some_and(|v| !v.trim().to_ascii_lowercase().starts_with("no"));
    let precedence = view.header("precedence").is_some_and(|v| {
        let v = v.trim().to_ascii_lowercase();
        ["bulk", "junk", "list", "auto_reply", "auto-reply"]
            .iter()
            .any(|p| v.starts_with(p))
    });
    let list = view
        .headers
        .iter()
        .any(|(k, _)| k.to_ascii_lowercase().starts_with("list-"));
    let null_sender = view
        .header("return-path")
        .is_some_and(|v| v.trim() == "<>" || v.trim().is_empty());
    let system_sender = view.from.as_deref().is_some_and(address::is_system);
    auto_submitted
        || precedence
        || list
        || null_sender
        || system_sender
        || has_autoreply_header(view)
}

fn has_autoreply_header(view: &View) -> bool {
    view.headers.iter().any(|(k, v)| {
        let k = k.to_ascii_lowercase();
        let v = v.trim().to_ascii_lowercase();
        matches!(
            k.as_str(),
            "x-autoreply"
                | "x-autorespond"
                | "x-autoreply-from"
                | "x-mail-autoreply"
                | "x-autoresponder"
        ) || (k == "x-autogenerated" && v.starts_with("reply"))
            || (k == "x-auto-response-suppress" && !v.is_empty())
    })
}

/// True when the message is an automatic reply (out of office and the like).
pub(crate) fn is_autoreply(view: &View) -> bool {
    let auto_replied = view
        .header("auto-submitted")
        .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("auto-replied"));
    let precedence_reply = view.header("precedence").is_some_and(|v| {
        let v = v.trim().to_ascii_lowercase();
        v.starts_with("auto_reply") || v.starts_with("auto-reply")
    });
    // a read receipt (RFC 8098 MDN) is an automatic answer too
    let receipt = view.report_type.as_deref() == Some("disposition-notification");
    if auto_replied || precedence_reply || receipt || has_autoreply_header(view) {
        return true;
    }
    let subject = view.subject.as_deref().unwrap_or("");
    if AUTOREPLY_SUBJECT.is_match(subject) {
        return true;
    }
    let head = super::view::truncate(&view.notice, 2000);
    let body = AUTOREPLY_BODY.is_match(head);
    let automatic = is_automatic(view);
    (body && (automatic || WEAK_SUBJECT.is_match(subject)))
        || (automatic && WEAK_SUBJECT.is_match(subject))
}

/// The person who is away: the auto-reply's sender (none for a read
/// receipt, which says nothing of absence).
pub(crate) fn absent_person(view: &View) -> Option<FailedRecipient> {
    if view.report_type.as_deref() == Some("disposition-notification") {
        return None;
    }
    let from = view
        .from
        .as_deref()
        .and_then(address::clean)
        .filter(|a| !address::is_system(a))?;
    Some(FailedRecipient {
        recipient: from,
        status: None,
        replycode: None,
        permanent: None,
        hard: None,
        reason: "vacation".to_string(),
        diagnostic: None,
    })
}

/// True when a subject alone says the message is an auto-reply.
pub fn is_autoreply_subject(subject: &str) -> bool {
    AUTOREPLY_SUBJECT.is_match(subject)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(headers: &[(&str, &str)], subject: &str, body: &str) -> View {
        View {
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            from: Some("ann@example.org".into()),
            subject: Some(subject.into()),
            notice: body.into(),
            ..View::default()
        }
    }

    #[test]
    fn subjects_in_each_language() {
        for s in [
            "Out of Office: quarterly report",
            "Automatic reply: hello",
            "AUTO: Ann is out of the office (returning 05/01)",
            "Réponse automatique : votre message",
            "Absent du bureau",
            "Abwesenheitsnotiz: Ihre Anfrage",
            "Automatische Antwort: Termin",
            "Fuera de la oficina",
            "Respuesta automática: pedido",
            "Risposta automatica: ordine",
            "Fuori ufficio",
            "Automatisch antwoord: offerte",
            "Afwezig",
            "Resposta automática: encomenda",
            "Fora do escritório",
            "[Automatyczna odpowiedź] test",
        ] {
            assert!(is_autoreply_subject(s), "{s}");
        }
        for s in ["Re: lunch", "Your invoice", "Meeting notes", "Fwd: photos"] {
            assert!(!is_autoreply_subject(s), "{s}");
        }
    }

    #[test]
    fn rfc3834_headers() {
        assert!(is_autoreply(&view(
            &[("Auto-Submitted", "auto-replied")],
            "x",
            ""
        )));
        assert!(is_autoreply(&view(&[("X-Autoreply", "yes")], "x", "")));
        assert!(is_autoreply(&view(
            &[("Precedence", "auto_reply")],
            "x",
            ""
        )));
        assert!(!is_autoreply(&view(
            &[("Auto-Submitted", "no")],
            "hello",
            "hi"
        )));
        assert!(!is_autoreply(&view(
            &[],
            "Vacation photos",
            "Here they are."
        )));
        // a person may thank you; an automaton thanks with a bulk header
        assert!(!is_autoreply(&view(
            &[],
            "Thank you for your message",
            "See you soon."
        )));
        assert!(is_autoreply(&view(
            &[("Precedence", "bulk")],
            "Thank you for your e-mail",
            "We will answer within two days."
        )));
    }

    #[test]
    fn body_with_weak_subject_or_automatic_header() {
        let v = view(
            &[],
            "Vacation",
            "I am currently out of the office until Monday.",
        );
        assert!(is_autoreply(&v));
        let v = view(
            &[("Precedence", "bulk")],
            "Re: order",
            "Je suis absent jusqu'au 3 mai.",
        );
        assert!(is_autoreply(&v));
    }

    #[test]
    fn automatic_mail() {
        assert!(is_automatic(&view(&[("Precedence", "bulk")], "x", "")));
        assert!(is_automatic(&view(
            &[("List-Id", "<l.example.org>")],
            "x",
            ""
        )));
        assert!(is_automatic(&view(&[("Return-Path", "<>")], "x", "")));
        assert!(!is_automatic(&view(
            &[("Return-Path", "<ann@example.org>")],
            "x",
            ""
        )));
    }
}
