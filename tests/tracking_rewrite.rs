//! Link rewriting against real-world-shaped mail (`tests/fixtures/html/`)
//! and generated HTML: the rewritten document, parsed by a browser-grade
//! parser (html5ever, through `scraper`), must be the original tree, node
//! for node, except for the rewritten `href`s (each of which must map back to
//! the original URL through the closure) and the one added pixel.

use std::collections::HashMap;

use facteur::tracking::{rewrite_html, rewrite_text, RewriteOptions};
use proptest::prelude::*;
use scraper::{ElementRef, Html, Node};

const PIXEL: &str = "https://t.example.net/t/o/PIXEL?r=1&s=2";
const CLICK_BASE: &str = "https://t.example.net/t/c/";

fn opts() -> RewriteOptions {
    RewriteOptions {
        unsubscribe_base: Some("https://t.example.net/u/".into()),
    }
}

/// A document tree reduced to what a reader sees, with adjacent text merged.
#[derive(Debug, Clone, PartialEq)]
enum Tree {
    Element {
        name: String,
        attrs: Vec<(String, String)>,
        children: Vec<Tree>,
        /// A formatting element holding the pixel and nothing else: see
        /// [`element_tree`].
        pixel_only: bool,
    },
    Text(String),
    Comment(String),
    Doctype(String),
    Other,
}

/// What a rewrite did: the output, and each tracked URL with the original
/// URL the closure was given for it.
struct Rewritten {
    output: String,
    originals: HashMap<String, String>,
    seen: Vec<String>,
}

fn rewrite(html: &str) -> Rewritten {
    let mut seen = Vec::new();
    let output = rewrite_html(
        html,
        &opts(),
        |url| {
            seen.push(url.to_string());
            // Something to escape in every tracked URL.
            Some(format!("{CLICK_BASE}{}?k=1&v=2", seen.len()))
        },
        Some(PIXEL),
    )
    .expect("rewrite");
    let originals = seen
        .iter()
        .enumerate()
        .map(|(i, url)| (format!("{CLICK_BASE}{}?k=1&v=2", i + 1), url.clone()))
        .collect();
    Rewritten {
        output,
        originals,
        seen,
    }
}

/// The URL a browser follows for an `href`: see the rewrite module doc.
fn browser_url(href: &str) -> String {
    href.trim_matches(|c: char| c <= ' ')
        .replace(['\t', '\n', '\r'], "")
}

fn is_pixel(el: &scraper::node::Element) -> bool {
    el.name() == "img" && el.attr("src") == Some(PIXEL)
}

/// The elements an HTML parser re-opens ("reconstructs") around new content
/// when the markup left them open: around the pixel too.
const FORMATTING: &[&str] = &[
    "a", "b", "big", "code", "em", "font", "i", "nobr", "s", "small", "strike", "strong", "tt", "u",
];

/// The tree under `el`, leaving pixels out (and counting them in `pixels`).
///
/// A formatting element left holding nothing but the pixel is marked
/// `pixel_only`: the parser may have made it only because the pixel was
/// inserted where one was left open (as in `<i><a href=...>text</i>`), as it
/// would for any content there.
fn element_tree(el: ElementRef<'_>, pixels: &mut usize) -> Tree {
    let pixels_before = *pixels;
    let mut children = Vec::new();
    for child in el.children() {
        let tree = match child.value() {
            Node::Element(e) if is_pixel(e) => {
                *pixels += 1;
                continue;
            }
            Node::Element(_) => element_tree(ElementRef::wrap(child).expect("element"), pixels),
            Node::Text(t) => Tree::Text(t.text.to_string()),
            Node::Comment(c) => Tree::Comment(c.comment.to_string()),
            Node::Doctype(d) => Tree::Doctype(d.name().to_string()),
            _ => Tree::Other,
        };
        push_merged(&mut children, tree);
    }
    let value = el.value();
    let pixel_only = *pixels > pixels_before
        && FORMATTING.contains(&value.name())
        && children.iter().all(|c| {
            matches!(
                c,
                Tree::Element {
                    pixel_only: true,
                    ..
                }
            )
        });
    let mut attrs: Vec<(String, String)> = value
        .attrs()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    attrs.sort();
    Tree::Element {
        name: format!("{}:{}", value.name.ns, value.name()),
        attrs,
        children,
        pixel_only,
    }
}

fn push_merged(children: &mut Vec<Tree>, tree: Tree) {
    if let (Some(Tree::Text(last)), Tree::Text(text)) = (children.last_mut(), &tree) {
        last.push_str(text);
    } else {
        children.push(tree);
    }
}

/// The whole document; the pixels are counted in `pixels`.
fn document_tree(html: &str, pixels: &mut usize) -> Vec<Tree> {
    let doc = Html::parse_document(html);
    let mut top = Vec::new();
    for child in doc.tree.root().children() {
        let tree = match child.value() {
            Node::Element(_) => element_tree(ElementRef::wrap(child).expect("element"), pixels),
            Node::Comment(c) => Tree::Comment(c.comment.to_string()),
            Node::Doctype(d) => Tree::Doctype(d.name().to_string()),
            Node::Text(t) => Tree::Text(t.text.to_string()),
            _ => Tree::Other,
        };
        push_merged(&mut top, tree);
    }
    top
}

/// Compares the trees; a link's `href` may differ only by being a tracked
/// URL for the original one, and `data-facteur-notrack` must be gone.
fn assert_same_tree(
    before: &[Tree],
    after: &[Tree],
    originals: &HashMap<String, String>,
    path: &str,
) {
    // Formatting elements re-opened around the pixel at the end.
    let mut after = after;
    while after.len() > before.len()
        && matches!(
            after.last(),
            Some(Tree::Element {
                pixel_only: true,
                ..
            })
        )
    {
        after = &after[..after.len() - 1];
    }
    assert_eq!(
        before.len(),
        after.len(),
        "{path}: children differ:\n{before:#?}\n{after:#?}"
    );
    for (i, (b, a)) in before.iter().zip(after).enumerate() {
        match (b, a) {
            (
                Tree::Element {
                    name: bn,
                    attrs: ba,
                    children: bc,
                    ..
                },
                Tree::Element {
                    name: an,
                    attrs: aa,
                    children: ac,
                    ..
                },
            ) => {
                let path = format!("{path}/{bn}[{i}]");
                assert_eq!(bn, an, "{path}");
                let is_link = bn.ends_with(":a") || bn.ends_with(":area");
                let kept: Vec<_> = ba
                    .iter()
                    .filter(|(k, _)| !(is_link && k == "data-facteur-notrack"))
                    .collect();
                assert_eq!(kept.len(), aa.len(), "{path}: attributes {ba:?} -> {aa:?}");
                for ((bk, bv), (ak, av)) in kept.into_iter().zip(aa) {
                    assert_eq!(bk, ak, "{path}");
                    if is_link && bk == "href" && bv != av {
                        let original = originals
                            .get(av)
                            .unwrap_or_else(|| panic!("{path}: href {bv:?} -> {av:?}"));
                        assert_eq!(original, &browser_url(bv), "{path}: wrong mapping");
                    } else {
                        assert_eq!(bv, av, "{path}: attribute {bk}");
                    }
                }
                assert_same_tree(bc, ac, originals, &path);
            }
            (Tree::Comment(b), Tree::Comment(a)) => assert_same_comment(b, a, originals, path),
            _ => assert_eq!(b, a, "{path}[{i}]"),
        }
    }
}

/// Outlook conditional comments may differ only in their `href` values,
/// which must map back to the originals (written without references in the
/// fixtures, so that they need no decoding here).
fn assert_same_comment(before: &str, after: &str, originals: &HashMap<String, String>, path: &str) {
    let href = regex::Regex::new(r#"(?i)href\s*=\s*("[^"]*"|'[^']*'|[^\s>"']+)"#).unwrap();
    let unquote = |v: &str| v.trim_matches(|c| c == '"' || c == '\'').to_string();
    let b: Vec<_> = href
        .captures_iter(before)
        .map(|c| c.get(1).unwrap())
        .collect();
    let a: Vec<_> = href
        .captures_iter(after)
        .map(|c| c.get(1).unwrap())
        .collect();
    assert_eq!(b.len(), a.len(), "{path}: comment {before:?} -> {after:?}");
    let (mut b_end, mut a_end) = (0, 0);
    for (bv, av) in b.iter().zip(&a) {
        assert_eq!(
            &before[b_end..bv.start()],
            &after[a_end..av.start()],
            "{path}"
        );
        let (b_url, a_url) = (unquote(bv.as_str()), unquote(av.as_str()));
        if b_url != a_url {
            let tracked = a_url.replace("&amp;", "&");
            assert_eq!(
                originals.get(&tracked),
                Some(&browser_url(&b_url)),
                "{path}"
            );
        }
        (b_end, a_end) = (bv.end(), av.end());
    }
    assert_eq!(&before[b_end..], &after[a_end..], "{path}");
}

/// Rewrites `html`, checks that the trees match and that exactly one pixel
/// was added, inside `<body>`; returns what the closure was given.
fn check_document(html: &str) -> Rewritten {
    let rewritten = rewrite(html);
    let mut pixels_before = 0;
    let before = document_tree(html, &mut pixels_before);
    let mut pixels = 0;
    let after = document_tree(&rewritten.output, &mut pixels);
    assert_eq!(pixels_before, 0);
    assert_same_tree(&before, &after, &rewritten.originals, "");
    assert_eq!(pixels, 1, "{pixels} pixels in:\n{}", rewritten.output);
    let doc = Html::parse_document(&rewritten.output);
    let in_body = doc
        .select(&scraper::Selector::parse("body img").unwrap())
        .any(|img| is_pixel(img.value()));
    assert!(in_body, "pixel outside body:\n{}", rewritten.output);
    // Every tracked URL made it into the output.
    for tracked in rewritten.originals.keys() {
        let escaped = tracked.replace('&', "&amp;");
        assert!(rewritten.output.contains(&format!("\"{escaped}\"")));
    }
    rewritten
}

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/html/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn newsletter_with_tables() {
    let r = check_document(&fixture("newsletter.html"));
    assert_eq!(
        r.seen,
        [
            "https://news.example.com/view/2024-04?utm_source=newsletter&utm_medium=email&utm_campaign=avril",
            "https://www.example.com/?utm_source=newsletter&utm_medium=email",
            "https://www.example.com/guides/semis-avril?utm_source=newsletter&utm_medium=email#calendrier",
            // The VML button for Outlook, then its twin for everyone else.
            "https://www.example.com/promo/graines-bio?code=AVRIL20",
            "https://www.example.com/promo/graines-bio?code=AVRIL20",
            "https://www.example.com/produits/tomate-coeur-de-boeuf",
            "https://www.example.com/produits/tomate-coeur-de-boeuf",
            "https://www.example.com/produits/basilic-genovese",
            "https://www.example.com/produits/basilic-genovese",
            "https://facebook.com/gazettedujardin",
            "https://www.instagram.com/gazettedujardin/",
        ]
    );
    let out = &r.output;
    assert!(!out.contains("data-facteur-notrack"));
    assert!(out.contains(r#"<a href="https://www.example.com/mentions-legales">"#));
    assert!(out.contains(r#"<a href="https://t.example.net/u/UNSUBSCRIBE_TOKEN">"#));
    assert!(out.contains(r#"<a href="mailto:bonjour@example.com?subject=Newsletter%20avril">"#));
    // The pixel closes the body, and the file's ending is untouched.
    assert!(out.ends_with(
        r#"style="display:block;border:0;width:1px;height:1px"></body>
</html>
"#
    ));
}

#[test]
fn transactional_receipt() {
    let r = check_document(&fixture("receipt.html"));
    assert_eq!(
        r.seen,
        [
            "https://shop.examplecoffee.com/products/ethiopia-yirgacheffe?variant=4411&ref=receipt",
            "https://shop.examplecoffee.com/products/v60-paper-filters?variant=902&ref=receipt",
            "https://shop.examplecoffee.com/account/orders/10482?key=wc_order_8f3Ka9&utm_source=receipt",
            "https://tracking.example-post.com/track?ids=LX123456789FR&lang=en",
            "https://examplecoffee.com/stores/portland",
            "https://examplecoffee.com/stores/seattle",
            "https://examplecoffee.com/legal/privacy",
        ]
    );
    assert!(r
        .output
        .contains(r##"<area shape="rect" coords="0,0,1,1" href="#" alt="">"##));
    assert!(r.output.contains(r#"<a href="/account">"#));
}

#[test]
fn uppercase_tags_and_unquoted_attributes() {
    let input = fixture("uppercase.html");
    let r = check_document(&input);
    assert_eq!(
        r.seen,
        [
            "http://www.example.org/sale?src=mail&id=42",
            "HTTP://WWW.EXAMPLE.ORG/SALE/SHOES",
            "https://www.example.org/sale/bags?colour=red&size=m",
            "https://www.example.org/sale/hats",
            "http://www.example.org/stores",
        ]
    );
    let out = &r.output;
    // Tag and attribute names keep their case; the new value is quoted.
    assert!(out.contains(r#"<A HREF="https://t.example.net/t/c/1?k=1&amp;v=2"><IMG SRC=http"#));
    assert!(out.contains(r#"<a Href="https://t.example.net/t/c/3?k=1&amp;v=2">bags</a>"#));
    assert!(out.contains(r#"<A href="https://t.example.net/t/c/4?k=1&amp;v=2" TITLE=Hats>"#));
    assert!(out.contains(r#"<A HREF="https://www.example.org/sale">All offers</A>"#));
    assert!(out.contains("HREF=https://t.example.net/u/TOKEN ALT=Unsubscribe>"));
    assert!(out.contains("<A HREF=MAILTO:sales@example.org>"));
    assert!(out.contains("<BODY BGCOLOR=#FFFFFF TEXT=#000000 LINK=#0000CC>"));
}

#[test]
fn entities_and_non_ascii_urls() {
    let r = check_document(&fixture("entities.html"));
    assert_eq!(
        r.seen,
        [
            "https://example.com/search?q=caf%C3%A9&lang=fr&page=2",
            "https://example.com/search?q=tea&lang=en&copy=1&reg=2&not=3",
            "https://example.com/r?a=1&b=2&c=3&d=4",
            "https://example.com/say?m=\"hello\"&to=<you>",
            "https://example.com/it?x=\"double\"&y=1",
            "https://example.com/legacy?a=1\u{ac}_b& c",
            "https://bücher.example/straße/größe?q=été&r=日本語",
            "https://xn--bcher-kva.example/stra%C3%9Fe?q=%C3%A9t%C3%A9",
            "https://example.com/café/crème?s=€…",
            "https://例え.テスト/パス?q=値#断片",
            "https://example.com/emoji/%F0%9F%8C%B1?e=🌱",
            "https://example.com/padded",
            "https://example.com/withnewline/in/path",
            "HtTpS://Example.COM/MiXeD",
        ]
    );
    // Left alone: an unknown reference, the unsubscribe link, a script.
    assert!(r
        .output
        .contains(r#"href="https://example.com/unknown?x=&frobnicate;""#));
    assert!(r
        .output
        .contains(r#"href="https://t.example.net/u/TOKEN?list=news&amp;x=1""#));
    assert!(r.output.contains(r#"href="javascript:void(0)""#));
}

#[test]
fn broken_html_with_unclosed_tags() {
    let r = check_document(&fixture("broken.html"));
    let expected: Vec<String> = ["story/1", "story/2?ref=digest&pos=2", "story/3", "story/4"]
        .iter()
        .chain(&["prefs", "a", "b", "last"])
        .map(|p| format!("https://news.example.com/{p}"))
        .collect();
    assert_eq!(r.seen, expected);
    // No `</body>`: the pixel ends the document.
    assert!(r
        .output
        .ends_with(&format!("last link</a>\n{}", pixel_markup())));
}

#[test]
fn fragment_without_body() {
    let input = fixture("nobody.html");
    let r = check_document(&input);
    assert_eq!(
        r.seen,
        [
            "https://accounts.example.com/security/reset?u=8842&t=Zx81",
            "https://accounts.example.com/help",
        ]
    );
    assert!(r.output.ends_with(&format!("</table>\n{}", pixel_markup())));
}

fn pixel_markup() -> String {
    format!(
        r#"<img src="{}" width="1" height="1" alt="" style="display:block;border:0;width:1px;height:1px">"#,
        PIXEL.replace('&', "&amp;")
    )
}

#[test]
fn without_pixel_url_only_links_change() {
    let input = fixture("receipt.html");
    let out = rewrite_html(&input, &opts(), |_| None, None).unwrap();
    assert_eq!(out, input);
}

#[test]
fn text_part_of_the_newsletter() {
    let text = "La Gazette du Jardin - avril\n\n\
        Version en ligne : https://news.example.com/view/2024-04?utm_source=newsletter&utm_medium=email\n\
        Notre calendrier des semis (https://www.example.com/guides/semis-avril).\n\
        -20 % sur les graines bio : https://www.example.com/promo/graines-bio?code=AVRIL20, jusqu'au 30 avril.\n\
        Écrivez-nous : bonjour@example.com\n\
        Se désinscrire : https://t.example.net/u/UNSUBSCRIBE_TOKEN\n";
    let mut seen = vec![];
    let out = rewrite_text(text, &opts(), |url| {
        seen.push(url.to_string());
        Some(format!("{CLICK_BASE}{}", seen.len()))
    });
    assert_eq!(
        seen,
        [
            "https://news.example.com/view/2024-04?utm_source=newsletter&utm_medium=email",
            "https://www.example.com/guides/semis-avril",
            "https://www.example.com/promo/graines-bio?code=AVRIL20",
        ]
    );
    assert!(out.contains("(https://t.example.net/t/c/2).\n"));
    assert!(out.contains("https://t.example.net/t/c/3, jusqu'au"));
    assert!(out.contains("https://t.example.net/u/UNSUBSCRIBE_TOKEN\n"));
}

#[test]
fn misnested_and_misplaced_tags() {
    // Cases the property below once found.
    for html in [
        r#"<I><a href="https://example.com">text</i>"#,
        "<b>",
        "<p><b><head><body><p></head><!-- note -->",
        r#"<p><a href="https://example.com/1">one<p>two</body></html>"#,
    ] {
        check_document(html);
    }
}

/// A URL as a template might write it in an `href`: raw, with references,
/// odd spacing, any scheme.
fn href_value() -> impl Strategy<Value = String> {
    let scheme = prop_oneof![
        Just("https://"),
        Just("http://"),
        Just("HTTPS://"),
        Just(" https://"),
        Just("mailto:"),
        Just("tel:"),
        Just(""),
        Just("#"),
        Just("/"),
        Just("//"),
        Just("javascript:"),
        Just("https://t.example.net/u/"),
    ];
    let host = prop_oneof![
        Just("example.com"),
        Just("bücher.example"),
        Just("xn--bcher-kva.example"),
        Just("例え.テスト"),
        Just("EXAMPLE.org"),
    ];
    let piece = prop_oneof![
        Just("/path"),
        Just("/caf%C3%A9"),
        Just("/é"),
        Just("?a=1"),
        Just("&amp;b=2"),
        Just("&b=2"),
        Just("&copy=3"),
        Just("&#38;c"),
        Just("&#x26;"),
        Just("&quot;"),
        Just("'"),
        Just("&not_x"),
        Just("&amp"),
        Just("#frag"),
        Just(" "),
        Just("&#x0A;"),
        Just("&lt;"),
        Just("\t"),
        Just("&eacute;"),
        Just("&zzz;"),
        Just("&#0;"),
        Just("&#150;"),
    ];
    (scheme, host, prop::collection::vec(piece, 0..5))
        .prop_map(|(s, h, pieces)| format!("{s}{h}{}", pieces.concat()))
}

/// `<a>` or `<area>` with an `href` in one of the three quoting styles.
fn link() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just("a"), Just("A"), Just("area"), Just("AREA")],
        prop_oneof![Just("href"), Just("HREF"), Just("Href")],
        href_value(),
        0..3u8,
        prop_oneof![
            Just(""),
            Just(" target=_blank"),
            Just(r#" class="btn""#),
            Just(" data-facteur-notrack"),
            Just(" DATA-FACTEUR-NOTRACK=1"),
        ],
        any::<bool>(),
    )
        .prop_map(|(tag, attr, value, quoting, extra, close)| {
            let unquotable =
                value.is_empty() || value.contains(|c: char| " \t\n'\"=<>`".contains(c));
            let attribute = match quoting {
                0 => format!(r#"{attr}="{value}""#),
                1 => format!("{attr}='{}'", value.replace('\'', "&#39;")),
                _ if unquotable => format!(r#"{attr}="{value}""#),
                _ => format!("{attr}={value}"),
            };
            let end = if close {
                format!("text</{tag}>")
            } else {
                "text".into()
            };
            format!("<{tag} {attribute}{extra}>{end}")
        })
}

/// A piece of a mail's HTML, well formed or not.
fn fragment() -> impl Strategy<Value = String> {
    let fixed = prop_oneof![
        Just("<p>"),
        Just("</p>"),
        Just(r#"<div class="x">"#),
        Just("</div>"),
        Just("<table><tr><td>"),
        Just("</td></tr></table>"),
        Just("<td>"),
        Just("<b>"),
        Just("</b>"),
        Just("<I>"),
        Just("</i>"),
        Just("<br>"),
        Just(r#"<img src="https://cdn.example.com/i.png" alt="">"#),
        Just("<!-- note -->"),
        Just(r#"<!--[if mso]><v:rect href="https://example.com/vml"></v:rect><![endif]-->"#),
        Just(r#"<script>var s = '</p><a href="https://x.example/">';</script>"#),
        Just("<style>a { color: red }</style>"),
        Just("<title>T &amp; t</title>"),
        Just(r#"<textarea><a href="https://example.com/ta"></textarea>"#),
        Just(r#"<svg><a href="https://example.com/svg">s</a></svg>"#),
        Just("Hello "),
        Just("caf&eacute; "),
        Just("a &amp; b < c "),
        Just("\n"),
        Just("<body>"),
        Just(r#"<BODY class="b">"#),
        Just("<html>"),
        Just("<head>"),
        Just("</head>"),
        Just("<font face=Arial>"),
        Just("</font>"),
        Just("<center>"),
        Just("<span>"),
        Just("</span>"),
        Just("<ul><li>"),
        Just("</h1>"),
        Just(r#"<noscript><a href="https://example.com/ns">n</a></noscript>"#),
    ];
    prop_oneof![3 => fixed.prop_map(String::from), 2 => link()]
}

/// A document of fragments. Only white space and comments follow
/// `</body>`: see the rewrite module doc for content after it.
fn document() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just(""), Just("<!DOCTYPE html>\n")],
        prop::collection::vec(fragment(), 0..30),
        prop_oneof![
            Just(""),
            Just("</body>"),
            Just("</body>\n</html>\n"),
            Just("</BODY></HTML>"),
            Just("\n</html>"),
            Just("</body>\n<!-- sent by facteur -->\n</html>\n\n"),
        ],
    )
        .prop_map(|(doctype, parts, end)| format!("{doctype}{}{end}", parts.concat()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn prop_rewriting_keeps_the_document(html in document()) {
        let r = check_document(&html);
        for url in &r.seen {
            let lower = url.to_ascii_lowercase();
            prop_assert!(lower.starts_with("http://") || lower.starts_with("https://"));
            prop_assert!(!url.starts_with("https://t.example.net/u/"));
        }
    }

    #[test]
    fn prop_text_rewriting_keeps_the_text(
        parts in prop::collection::vec(prop_oneof![
            Just("see "), Just("https://example.com/a"), Just("http://EXAMPLE.org/b?c=d&e=f"),
            Just("https://bücher.example/é"), Just("https://t.example.net/u/T"), Just("("),
            Just(")"), Just(". "), Just(","), Just("\n"), Just("<"), Just(">"), Just("\""),
            Just("mailto:a@example.com"), Just("https://"), Just("。"), Just("_(x)"),
        ], 0..20),
    ) {
        let text = parts.concat();
        let mut seen = Vec::new();
        let out = rewrite_text(&text, &opts(), |url| {
            seen.push(url.to_string());
            Some(format!("\u{1}{}\u{2}", seen.len() - 1))
        });
        // Putting the original URLs back gives the original text.
        let mut restored = String::new();
        let mut rest = out.as_str();
        while let Some(start) = rest.find('\u{1}') {
            restored.push_str(&rest[..start]);
            let end = rest.find('\u{2}').unwrap();
            let i: usize = rest[start + 1..end].parse().unwrap();
            restored.push_str(&seen[i]);
            rest = &rest[end + 1..];
        }
        restored.push_str(rest);
        prop_assert_eq!(&restored, &text);
        for url in &seen {
            prop_assert!(!url.contains(char::is_whitespace));
            prop_assert!(!url.ends_with(['.', ',', '。']));
            prop_assert!(!url.starts_with("https://t.example.net/u/"));
        }
    }
}
