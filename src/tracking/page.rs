//! What the tracking endpoints answer with: the open pixel, and the small
//! unsubscribe pages in French and English.
//!
//! The pages are plain HTML with no script and no outside resource: a
//! heading, one sentence, and a real `<form method="post">` whose button
//! unsubscribes. A `GET` only ever shows the form (link scanners fetch every
//! `GET`); the `POST` it sends is the same request as RFC 8058's one-click
//! unsubscribe.

/// A transparent 1×1 GIF (GIF89a, one transparent pixel): 43 bytes.
pub const PIXEL_GIF: [u8; 43] = [
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, // "GIF89a"
    0x01, 0x00, 0x01, 0x00, // 1×1
    0x80, 0x00, 0x00, // global colour table of 2 entries, background 0
    0x00, 0x00, 0x00, 0xff, 0xff, 0xff, // black, white
    0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, // colour 0 is transparent
    0x2c, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, // image 1×1
    0x02, 0x02, 0x44, 0x01, 0x00, // LZW data
    0x3b, // trailer
];

/// The language of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// French.
    Fr,
    /// English (the default).
    En,
}

impl Lang {
    /// The value of the `lang` attribute and `Content-Language`.
    pub fn code(self) -> &'static str {
        match self {
            Lang::Fr => "fr",
            Lang::En => "en",
        }
    }

    /// The language to answer in for an `Accept-Language` header: the one
    /// of French and English with the highest weight (`fr-CA;q=0.8` counts
    /// for French), English when neither is named or on a tie.
    pub fn negotiate(accept_language: Option<&str>) -> Lang {
        let Some(header) = accept_language else {
            return Lang::En;
        };
        let (mut fr, mut en) = (0.0f32, 0.0f32);
        for item in header.split(',') {
            let mut parts = item.split(';');
            let tag = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0)
                .clamp(0.0, 1.0);
            let primary = tag.split('-').next().unwrap_or("");
            match primary {
                "fr" => fr = fr.max(q),
                "en" => en = en.max(q),
                _ => {}
            }
        }
        if fr > en {
            Lang::Fr
        } else {
            Lang::En
        }
    }
}

/// The words of the pages, per language.
struct Words {
    title: &'static str,
    question: &'static str,
    button: &'static str,
    done_title: &'static str,
    done: &'static str,
    invalid_title: &'static str,
    invalid: &'static str,
}

fn words(lang: Lang) -> &'static Words {
    match lang {
        Lang::Fr => &Words {
            title: "Se désabonner",
            question: "Ne plus recevoir ces messages à l’adresse",
            button: "Me désabonner",
            done_title: "Désabonnement confirmé",
            done: "Vous ne recevrez plus ces messages à l’adresse",
            invalid_title: "Lien non valable",
            invalid: "Ce lien de désabonnement n’est pas valable. Utilisez le lien du message reçu, sans le modifier.",
        },
        Lang::En => &Words {
            title: "Unsubscribe",
            question: "Stop receiving these messages at",
            button: "Unsubscribe",
            done_title: "You are unsubscribed",
            done: "You will no longer receive these messages at",
            invalid_title: "Invalid link",
            invalid: "This unsubscribe link is not valid. Use the link in the message you received, unchanged.",
        },
    }
}

/// The page that asks for confirmation, for `email`. The form posts to
/// the page's own URL (no `action`), so the page works behind any path
/// prefix.
pub fn confirm_page(lang: Lang, email: &str) -> String {
    let w = words(lang);
    let body = format!(
        r#"<p id="what">{question} <strong>{email}</strong>&#8239;?</p>
<form method="post" aria-describedby="what">
<input type="hidden" name="List-Unsubscribe" value="One-Click">
<button type="submit" id="confirm">{button}</button>
</form>"#,
        question = w.question,
        email = escape(&masked(email)),
        button = w.button,
    );
    let body = if lang == Lang::En {
        body.replace("&#8239;?", "?")
    } else {
        body
    };
    page(lang, w.title, &body)
}

/// The page shown once the address is unsubscribed.
pub fn done_page(lang: Lang, email: &str) -> String {
    let w = words(lang);
    let body = format!(
        r#"<p role="status">{done} <strong>{email}</strong>.</p>"#,
        done = w.done,
        email = escape(&masked(email)),
    );
    page(lang, w.done_title, &body)
}

/// The page for a link that does not verify.
pub fn invalid_page(lang: Lang) -> String {
    let w = words(lang);
    page(lang, w.invalid_title, &format!("<p>{}</p>", w.invalid))
}

fn page(lang: Lang, title: &str, body: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="{lang}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{title}</title>
<style>
body{{font:1.125rem/1.5 system-ui,sans-serif;margin:0;padding:2rem 1rem;color:#1a1a1a;background:#fff}}
main{{max-width:32rem;margin:0 auto}}
h1{{font-size:1.5rem}}
button{{font:inherit;padding:.6rem 1.4rem;border:2px solid #1a1a1a;border-radius:.4rem;background:#1a1a1a;color:#fff;cursor:pointer}}
button:focus-visible{{outline:3px solid #0a58ca;outline-offset:3px}}
</style>
</head>
<body>
<main>
<h1>{title}</h1>
{body}
</main>
</body>
</html>
"#,
        lang = lang.code(),
    )
}

/// `jane.doe@example.com` as `j•••@example.com`: enough for the owner to
/// recognise, little for anyone the link was forwarded to.
fn masked(email: &str) -> String {
    match email.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}•••@{domain}")
        }
        None => "•••".to_string(),
    }
}

/// Escapes text for HTML content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixel_is_a_43_byte_gif() {
        assert_eq!(PIXEL_GIF.len(), 43);
        assert!(PIXEL_GIF.starts_with(b"GIF89a"));
        assert_eq!(PIXEL_GIF[42], 0x3b);
    }

    #[test]
    fn language_follows_accept_language() {
        assert_eq!(Lang::negotiate(None), Lang::En);
        assert_eq!(Lang::negotiate(Some("fr-FR,fr;q=0.9,en;q=0.8")), Lang::Fr);
        assert_eq!(Lang::negotiate(Some("en-GB,fr;q=0.5")), Lang::En);
        assert_eq!(Lang::negotiate(Some("de, fr;q=0.3")), Lang::Fr);
        assert_eq!(Lang::negotiate(Some("de")), Lang::En);
        assert_eq!(Lang::negotiate(Some("fr;q=0, en;q=0.1")), Lang::En);
        assert_eq!(Lang::negotiate(Some("FR-ca")), Lang::Fr);
        assert_eq!(Lang::negotiate(Some(";;q=,")), Lang::En);
    }

    #[test]
    fn confirm_page_is_an_accessible_form() {
        let fr = confirm_page(Lang::Fr, "jane@example.com");
        assert!(fr.contains(r#"<html lang="fr">"#));
        assert!(fr.contains(r#"<form method="post""#));
        assert!(fr.contains(r#"<button type="submit" id="confirm">Me désabonner</button>"#));
        assert!(fr.contains("j•••@example.com"));
        assert!(!fr.contains("jane@"));
        let en = confirm_page(Lang::En, "<x>@example.com");
        assert!(en.contains(r#"<html lang="en">"#));
        assert!(en.contains("&lt;•••@example.com"));
        assert!(en.contains("<title>Unsubscribe</title>"));
    }

    #[test]
    fn done_and_invalid_pages() {
        assert!(done_page(Lang::Fr, "a@b.test").contains("Désabonnement confirmé"));
        assert!(invalid_page(Lang::En).contains("Invalid link"));
    }
}
