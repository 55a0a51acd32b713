//! Rewriting a message's links to tracked URLs, and adding the open pixel.
//!
//! [`rewrite_html`] streams the HTML part through `lol_html`, so everything it
//! does not rewrite comes out byte for byte as it went in: no re-serialising,
//! no "fixing" of broken markup. [`rewrite_text`] does the same for the bare
//! URLs of the plain-text part.
//!
//! Both take a closure that gets the original URL and returns the tracked
//! URL (usually `https://HOST/t/c/TOKEN` with the URL signed into the token),
//! or `None` to leave that link alone, for instance when the token would be
//! too long.
//!
//! # Which links are rewritten
//!
//! Every `http:` or `https:` URL in the `href` of an `<a>` or `<area>`, and
//! of an `<a>`, `<area>` or VML element (`<v:roundrect>`, the "bulletproof
//! button" of Outlook for Windows) inside an Outlook conditional comment
//! (`<!--[if mso]>...<![endif]-->`), with these exceptions, left exactly as
//! written:
//!
//! - other schemes (`mailto:`, `tel:`, ...), `#anchors` and relative links;
//! - links carrying `data-facteur-notrack` (the attribute itself is removed
//!   from the output, whatever its value);
//! - the unsubscribe link: a URL that starts with
//!   [`RewriteOptions::unsubscribe_base`];
//! - an `href` holding a named character reference ended by `;` that this
//!   module does not know (see `entity`): rather than guess what a browser
//!   would make of it, the link is not tracked.
//!
//! The closure receives the URL as a browser would follow it: character
//! references decoded (`&amp;` is `&`), leading and trailing spaces and
//! controls removed, tabs and newlines dropped. The new `href` is escaped
//! again and written in double quotes.
//!
//! # The open pixel
//!
//! The 1×1 image goes just before the `</body>` of the first `<body>` (or
//! before `</html>` when `</body>` is missing), else at the end of the
//! document. What a browser then builds is the original tree plus the image,
//! with two exceptions, both in markup that is already broken:
//!
//! - formatting elements left open by misnesting (`<i><a href=..>x</i>`, or
//!   an `<a>` cut by a `<p>`) are re-opened by the parser around any new
//!   content, so the pixel may sit in an empty copy of them, and content
//!   after `</body>` other than white space and comments may nest inside
//!   that copy;
//! - a document ending inside an unclosed `<title>`, `<style>`, `<script>`,
//!   `<textarea>` or comment swallows the pixel as text, as it swallowed
//!   everything before it.

mod entity;

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::LazyLock;

use lol_html::html_content::{Comment, ContentType, Element};
use lol_html::{
    doc_comments, end, end_tag, rewrite_str, DocumentContentHandlers, ElementContentHandlers,
    RewriteStrSettings, Selector,
};
use regex::Regex;

/// Attribute that opts a link out of tracking; removed from the output.
pub const NOTRACK_ATTRIBUTE: &str = "data-facteur-notrack";

/// The selectors, parsed once rather than for every message.
static LINKS: LazyLock<Selector> = LazyLock::new(|| selector("a, area"));
static BODY: LazyLock<Selector> = LazyLock::new(|| selector("body"));
static CONDITIONAL_LINKS: LazyLock<Selector> =
    LazyLock::new(|| selector("[href], [data-facteur-notrack]"));

fn selector(s: &str) -> Selector {
    s.parse().expect("a valid selector")
}

/// What the rewriting needs to know beyond the message itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RewriteOptions {
    /// URL prefix of the unsubscribe link (say `https://t.example.com/u/`):
    /// links starting with it are never wrapped in a click redirect.
    pub unsubscribe_base: Option<String>,
}

/// Why an HTML part could not be rewritten.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    /// The HTML rewriter failed (in practice only on memory limits).
    #[error("rewriting the HTML part failed: {0}")]
    Html(#[from] lol_html::errors::RewritingError),
}

/// Rewrites the links of an HTML part through `make_click_url`, and adds the
/// open pixel `pixel_url` (if any) at the end of `<body>`, or at the end of
/// the document when there is no `<body>` element to close.
///
/// See the module doc for the links that are left alone.
pub fn rewrite_html(
    html: &str,
    opts: &RewriteOptions,
    make_click_url: impl FnMut(&str) -> Option<String>,
    pixel_url: Option<&str>,
) -> Result<String, RewriteError> {
    // Called by the link and the comment handlers, which lol_html runs one
    // at a time, in document order.
    let make_click_url = RefCell::new(make_click_url);
    let mut element_content_handlers = vec![(
        Cow::Borrowed(&*LINKS),
        ElementContentHandlers::default().element(|el: &mut Element<'_, '_>| {
            rewrite_link(el, opts, &mut *make_click_url.borrow_mut());
            Ok(())
        }),
    )];
    let mut document_content_handlers = vec![doc_comments!(|comment| {
        rewrite_conditional_comment(comment, opts, &mut *make_click_url.borrow_mut());
        Ok(())
    })];
    if let Some(url) = pixel_url {
        let (body, end) = pixel_handlers(pixel_html(url));
        element_content_handlers.push(body);
        document_content_handlers.push(end);
    }
    Ok(rewrite_str(
        html,
        RewriteStrSettings {
            element_content_handlers,
            document_content_handlers,
            ..RewriteStrSettings::new()
        },
    )?)
}

/// The handlers placing `pixel` before the `</body>` of the first `<body>`,
/// or else at the end of the document.
fn pixel_handlers<'s, 'h>(
    pixel: String,
) -> (
    (Cow<'s, Selector>, ElementContentHandlers<'h>),
    DocumentContentHandlers<'h>,
) {
    // Whether the pixel has been placed before `</body>`: shared by the body
    // end-tag handler and the document-end handler, in one thread.
    let placed = Rc::new(Cell::new(false));
    let (body_placed, end_placed) = (placed.clone(), placed);
    let body_pixel = pixel.clone();
    let mut body_seen = false;
    let body_handler = move |el: &mut Element<'_, '_>| {
        // Broken mail may hold several `<body>` tags: one pixel only.
        if body_seen {
            return Ok(());
        }
        body_seen = true;
        let placed = body_placed.clone();
        let pixel = body_pixel.clone();
        // Runs at the end tag that closes `<body>` for lol_html: `</body>`, or
        // that of an element opened before it. Only `</body>` and `</html>`
        // close the body for a browser too; otherwise (or with no end tag at
        // all) the document-end handler places the pixel.
        el.on_end_tag(end_tag!(move |end| {
            let name = end.name();
            if !placed.get() && (name == "body" || name == "html") {
                end.before(&pixel, ContentType::Html);
                placed.set(true);
            }
            Ok(())
        }))
    };
    let body = (
        Cow::Borrowed(&*BODY),
        ElementContentHandlers::default().element(body_handler),
    );
    let end = end!(move |end| {
        if !end_placed.get() {
            end.append(&pixel, ContentType::Html);
        }
        Ok(())
    });
    (body, end)
}

/// Rewrites the `href` of one link if it should be tracked, and removes the
/// opt-out attribute. Returns whether the element changed.
fn rewrite_link(
    el: &mut Element<'_, '_>,
    opts: &RewriteOptions,
    make_click_url: &mut impl FnMut(&str) -> Option<String>,
) -> bool {
    if el.has_attribute(NOTRACK_ATTRIBUTE) {
        el.remove_attribute(NOTRACK_ATTRIBUTE);
        return true;
    }
    let Some(raw) = el.get_attribute("href") else {
        return false;
    };
    let Some(decoded) = entity::decode_attribute(&raw) else {
        return false;
    };
    let url = browser_url(&decoded);
    if !is_trackable(&url, opts) {
        return false;
    }
    let Some(tracked) = make_click_url(&url) else {
        return false;
    };
    el.set_attribute("href", &entity::escape_attribute(&tracked))
        .expect("href is a valid attribute name");
    true
}

/// Rewrites the links inside an Outlook conditional comment,
/// `<!--[if mso]>...<![endif]-->`: the markup only Outlook for Windows
/// renders, typically the VML twin (`<v:roundrect href=...>`) of a button.
/// Other comments, and conditional ones without a link to track, are left
/// as they are.
fn rewrite_conditional_comment(
    comment: &mut Comment<'_>,
    opts: &RewriteOptions,
    make_click_url: &mut impl FnMut(&str) -> Option<String>,
) {
    let text = comment.text();
    if !text.starts_with("[if ") {
        return;
    }
    let (Some(open), Some(close)) = (text.find("]>"), text.rfind("<![endif]")) else {
        return;
    };
    let inner = match text.get(open + 2..close) {
        Some(inner) if inner.to_ascii_lowercase().contains("href") => inner,
        _ => return,
    };
    let mut changed = false;
    let rewritten = rewrite_str(
        inner,
        RewriteStrSettings {
            element_content_handlers: vec![(
                Cow::Borrowed(&*CONDITIONAL_LINKS),
                ElementContentHandlers::default().element(|el: &mut Element<'_, '_>| {
                    let tag = el.tag_name();
                    if tag == "a" || tag == "area" || tag.starts_with("v:") {
                        changed |= rewrite_link(el, opts, make_click_url);
                    }
                    Ok(())
                }),
            )],
            ..RewriteStrSettings::new()
        },
    );
    if let (Ok(rewritten), true) = (rewritten, changed) {
        let new_text = format!("{}{rewritten}{}", &text[..open + 2], &text[close..]);
        // Refused only if it would close the comment early: keep it as it was.
        let _ = comment.set_text(&new_text);
    }
}

/// The URL a browser follows for an `href` value: leading and trailing C0
/// controls and spaces removed, tabs and newlines removed anywhere (WHATWG
/// URL parsing).
fn browser_url(href: &str) -> Cow<'_, str> {
    let trimmed = href.trim_matches(|c: char| c <= ' ');
    if trimmed.contains(['\t', '\n', '\r']) {
        Cow::Owned(trimmed.replace(['\t', '\n', '\r'], ""))
    } else {
        Cow::Borrowed(trimmed)
    }
}

/// Whether `url` is an absolute `http(s)` URL other than the unsubscribe
/// link.
fn is_trackable(url: &str, opts: &RewriteOptions) -> bool {
    let scheme_ok = ["http:", "https:"].iter().any(|scheme| {
        url.get(..scheme.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(scheme))
    });
    let unsubscribe = opts
        .unsubscribe_base
        .as_deref()
        .is_some_and(|base| !base.is_empty() && url.starts_with(base));
    scheme_ok && !unsubscribe
}

/// The open pixel's markup.
fn pixel_html(url: &str) -> String {
    format!(
        r#"<img src="{}" width="1" height="1" alt="" style="display:block;border:0;width:1px;height:1px">"#,
        entity::escape_attribute(url)
    )
}

/// A bare URL in plain text. It ends at white space, `<`, `>` or `"`;
/// trailing punctuation is trimmed by [`trim_url_end`].
static TEXT_URL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"(?i)\bhttps?://[^\s<>"]+"#).expect("valid regex"));

/// Rewrites the bare `http(s)` URLs of a plain-text part through
/// `make_click_url`, leaving the unsubscribe link alone. Punctuation that
/// ends a sentence or closes a parenthesis around the URL is not part of it.
pub fn rewrite_text(
    text: &str,
    opts: &RewriteOptions,
    mut make_click_url: impl FnMut(&str) -> Option<String>,
) -> String {
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for found in TEXT_URL.find_iter(text) {
        let url = trim_url_end(found.as_str());
        let has_host = url
            .split_once("://")
            .is_some_and(|(_, rest)| !rest.is_empty());
        if !has_host || !is_trackable(url, opts) {
            continue;
        }
        if let Some(tracked) = make_click_url(url) {
            out.push_str(&text[copied..found.start()]);
            out.push_str(&tracked);
            copied = found.start() + url.len();
        }
    }
    out.push_str(&text[copied..]);
    out
}

/// `url` without the punctuation that follows it in prose: `.`, `,`, `;`,
/// `:`, `!`, `?`, quotes, and closing brackets that close nothing opened
/// inside the URL (so `https://en.wikipedia.org/wiki/Rust_(language)` keeps
/// its `)`).
fn trim_url_end(url: &str) -> &str {
    let mut url = url;
    loop {
        let Some(last) = url.chars().next_back() else {
            return url;
        };
        let trim = match last {
            '.' | ',' | ';' | ':' | '!' | '?' | '\'' | '*' => true,
            '。' | '、' | '，' | '！' | '？' | '」' | '』' | '”' | '’' | '»' => true,
            ')' => url.matches('(').count() < url.matches(')').count(),
            ']' => url.matches('[').count() < url.matches(']').count(),
            '}' => url.matches('{').count() < url.matches('}').count(),
            '）' => url.matches('（').count() < url.matches('）').count(),
            _ => false,
        };
        if !trim {
            return url;
        }
        url = &url[..url.len() - last.len_utf8()];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> RewriteOptions {
        RewriteOptions {
            unsubscribe_base: Some("https://t.example.net/u/".into()),
        }
    }

    /// A closure mapping `URL` to `T(URL)`, recording what it was given.
    fn tracker(seen: &mut Vec<String>) -> impl FnMut(&str) -> Option<String> + '_ {
        move |url| {
            seen.push(url.to_string());
            Some(format!("https://t.example.net/t/c/{}", seen.len()))
        }
    }

    fn html(input: &str, pixel: Option<&str>) -> (String, Vec<String>) {
        let mut seen = vec![];
        let out = rewrite_html(input, &opts(), tracker(&mut seen), pixel).unwrap();
        (out, seen)
    }

    #[test]
    fn http_links_are_rewritten_and_nothing_else_changes() {
        let input = r#"<p class=x>Hi <a href="https://example.com/a" target=_blank>a</a>
<A HREF=http://EXAMPLE.com/B>b</A> <area href='https://example.com/c' alt="c"></p>"#;
        let (out, seen) = html(input, None);
        assert_eq!(
            seen,
            [
                "https://example.com/a",
                "http://EXAMPLE.com/B",
                "https://example.com/c"
            ]
        );
        assert_eq!(
            out,
            r#"<p class=x>Hi <a href="https://t.example.net/t/c/1" target=_blank>a</a>
<A HREF="https://t.example.net/t/c/2">b</A> <area href="https://t.example.net/t/c/3" alt="c"></p>"#
        );
    }

    #[test]
    fn links_left_alone() {
        let input = concat!(
            r#"<a href="mailto:a@example.com">m</a><a href="tel:+331234">t</a>"#,
            r##"<a href="#top">#</a><a href="/relative">r</a><a href="//cdn.example.com/x">p</a>"##,
            r#"<a href="https://t.example.net/u/TOKEN">unsubscribe</a><a>no href</a>"#,
            r#"<a href="ftp://example.com/f">f</a><a href="javascript:alert(1)">j</a>"#,
            r#"<a href="https://example.com/?x=&unknownentity;">u</a>"#,
        );
        let (out, seen) = html(input, None);
        assert!(seen.is_empty(), "{seen:?}");
        assert_eq!(out, input);
    }

    #[test]
    fn notrack_attribute_is_removed_and_link_kept() {
        let (out, seen) = html(
            r#"<a data-facteur-notrack href="https://example.com/x">x</a><a DATA-FACTEUR-NOTRACK="1">y</a>"#,
            None,
        );
        assert!(seen.is_empty());
        assert_eq!(out, r#"<a href="https://example.com/x">x</a><a>y</a>"#);
    }

    #[test]
    fn entities_are_decoded_for_the_closure_and_escaped_again() {
        let mut given = String::new();
        let out = rewrite_html(
            r#"<a href=" https://example.com/?a=1&amp;b=&eacute;&#x74;&c=2 ">x</a>"#,
            &opts(),
            |url| {
                given = url.to_string();
                Some(format!("{url}&tracked=\"1\""))
            },
            None,
        )
        .unwrap();
        assert_eq!(given, "https://example.com/?a=1&b=ét&c=2");
        assert_eq!(
            out,
            r#"<a href="https://example.com/?a=1&amp;b=ét&amp;c=2&amp;tracked=&quot;1&quot;">x</a>"#
        );
    }

    #[test]
    fn closure_may_decline_a_link() {
        let out = rewrite_html(
            r#"<a href="https://example.com/">x</a>"#,
            &opts(),
            |_| None,
            None,
        )
        .unwrap();
        assert_eq!(out, r#"<a href="https://example.com/">x</a>"#);
    }

    #[test]
    fn pixel_goes_before_the_end_of_body() {
        let pixel = "https://t.example.net/t/o/T?a&b";
        let img = r#"<img src="https://t.example.net/t/o/T?a&amp;b" width="1" height="1" alt="" style="display:block;border:0;width:1px;height:1px">"#;
        let (out, _) = html("<html><body><p>x</p></BODY>\n</html>\n", Some(pixel));
        assert_eq!(out, format!("<html><body><p>x</p>{img}</BODY>\n</html>\n"));
        // No body element: at the end of the document.
        let (out, _) = html("<p>x</p>", Some(pixel));
        assert_eq!(out, format!("<p>x</p>{img}"));
        // A body that is never closed.
        let (out, _) = html("<body><p>x", Some(pixel));
        assert_eq!(out, format!("<body><p>x{img}"));
        // Two body tags: one pixel.
        let (out, _) = html("<body><body>x</body></body>", Some(pixel));
        assert_eq!(out.matches("<img").count(), 1);
        // A `</body>` inside a comment or a script is not the end of body.
        let (out, _) = html(
            "<body><!-- </body> --><script>'</body>'</script></body>",
            Some(pixel),
        );
        assert_eq!(
            out,
            format!("<body><!-- </body> --><script>'</body>'</script>{img}</body>")
        );
    }

    #[test]
    fn pixel_waits_for_an_end_tag_that_closes_body_in_a_browser() {
        let pixel = "https://t.example.net/t/o/T";
        // `</html>` without `</body>`: before it.
        let (out, _) = html("<html><body>x</html>", Some(pixel));
        assert!(out.starts_with("<html><body>x<img ") && out.ends_with("></html>"));
        // lol_html closes `<body>` at `</head>` here; a browser ignores it.
        let (out, _) = html("<head><body><p>x</head><p>y", Some(pixel));
        assert!(out.starts_with("<head><body><p>x</head><p>y<img "), "{out}");
    }

    #[test]
    fn outlook_conditional_comments_are_rewritten() {
        let input = concat!(
            r#"<!--[if mso]><v:roundrect xmlns:v="urn:schemas-microsoft-com:vml" "#,
            r#"href="https://example.com/buy?a=1&amp;b=2" arcsize="10%"><center>Buy</center>"#,
            r#"</v:roundrect><a href="https://example.com/x">x</a><![endif]-->"#,
            r#"<!--[if !mso]><!-- --><a href="https://example.com/buy?a=1&amp;b=2">Buy</a><!--<![endif]-->"#,
            r#"<!-- <a href="https://example.com/commented-out">old</a> -->"#,
            r#"<!--[if mso]><v:rect href="mailto:a@example.com"></v:rect><![endif]-->"#,
        );
        let (out, seen) = html(input, None);
        assert_eq!(
            seen,
            [
                "https://example.com/buy?a=1&b=2",
                "https://example.com/x",
                "https://example.com/buy?a=1&b=2",
            ]
        );
        let expected = concat!(
            r#"<!--[if mso]><v:roundrect xmlns:v="urn:schemas-microsoft-com:vml" "#,
            r#"href="https://t.example.net/t/c/1" arcsize="10%"><center>Buy</center>"#,
            r#"</v:roundrect><a href="https://t.example.net/t/c/2">x</a><![endif]-->"#,
            r#"<!--[if !mso]><!-- --><a href="https://t.example.net/t/c/3">Buy</a><!--<![endif]-->"#,
            r#"<!-- <a href="https://example.com/commented-out">old</a> -->"#,
            r#"<!--[if mso]><v:rect href="mailto:a@example.com"></v:rect><![endif]-->"#,
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn text_urls_are_rewritten_without_trailing_punctuation() {
        let text = "Shop: https://example.com/sale. See (https://example.com/a?b=1), \
                    https://en.wikipedia.org/wiki/Rust_(language)! <https://example.com/x> \
                    « https://exämple.com/é » https://t.example.net/u/TOKEN http:// \
                    mailto:a@example.com https://example.com/end";
        let mut seen = vec![];
        let out = rewrite_text(text, &opts(), tracker(&mut seen));
        assert_eq!(
            seen,
            [
                "https://example.com/sale",
                "https://example.com/a?b=1",
                "https://en.wikipedia.org/wiki/Rust_(language)",
                "https://example.com/x",
                "https://exämple.com/é",
                "https://example.com/end",
            ]
        );
        assert_eq!(
            out,
            "Shop: https://t.example.net/t/c/1. See (https://t.example.net/t/c/2), \
                    https://t.example.net/t/c/3! <https://t.example.net/t/c/4> \
                    « https://t.example.net/t/c/5 » https://t.example.net/u/TOKEN http:// \
                    mailto:a@example.com https://t.example.net/t/c/6"
        );
    }

    #[test]
    fn text_without_urls_is_unchanged() {
        let text = "Bonjour,\n\nNo links here: example.com, http:/broken.\n";
        assert_eq!(rewrite_text(text, &opts(), |_| panic!("no URL")), text);
    }
}
