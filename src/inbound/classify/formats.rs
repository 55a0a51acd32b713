//! Whole messages in the shapes common MTAs and providers send, written
//! for these tests (addresses and hosts are made up): each must come out
//! with the right kind, recipients and reason.

use super::{classify, Classification, Kind};

fn message(headers: &str, body: &str) -> Vec<u8> {
    format!(
        "{}\r\n\r\n{}",
        headers.trim().replace('\n', "\r\n"),
        body.replace('\n', "\r\n")
    )
    .into_bytes()
}

fn recipients(c: &Classification) -> Vec<String> {
    c.recipients
        .iter()
        .map(|r| r.recipient.to_ascii_lowercase())
        .collect()
}

#[test]
fn postfix_text_and_dsn() {
    let raw = message(
        "From: MAILER-DAEMON@mx.sender.example (Mail Delivery System)\n\
         To: bounces+42@sender.example\n\
         Subject: Undelivered Mail Returned to Sender\n\
         MIME-Version: 1.0\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"P\"",
        "--P\nContent-Description: Notification\nContent-Type: text/plain\n\n\
         This is the mail system at host mx.sender.example.\n\n\
         I'm sorry to have to inform you that your message could not\n\
         be delivered to one or more recipients.\n\n\
         <gone@dest.example>: host mx.dest.example[192.0.2.7] said: 550 5.1.1\n    \
         <gone@dest.example>: Recipient address rejected: User unknown in virtual\n    \
         mailbox table (in reply to RCPT TO command)\n\n\
         --P\nContent-Description: Delivery report\nContent-Type: message/delivery-status\n\n\
         Reporting-MTA: dns; mx.sender.example\n\n\
         Final-Recipient: rfc822; gone@dest.example\nOriginal-Recipient: rfc822;gone@dest.example\n\
         Action: failed\nStatus: 5.1.1\nRemote-MTA: dns; mx.dest.example\n\
         Diagnostic-Code: smtp; 550 5.1.1 <gone@dest.example>: Recipient address\n    \
         rejected: User unknown in virtual mailbox table\n\n\
         --P\nContent-Type: text/rfc822-headers\n\n\
         From: news@sender.example\nTo: gone@dest.example\nMessage-ID: <n1@sender.example>\n\n--P--\n",
    );
    let c = classify(&raw);
    assert_eq!(c.kind, Kind::Bounce);
    assert_eq!(recipients(&c), ["gone@dest.example"]);
    let r = c.first().unwrap();
    assert_eq!(r.reason, "userunknown");
    assert_eq!(r.hard, Some(true));
    assert_eq!(c.original_message_id.as_deref(), Some("n1@sender.example"));
}

#[test]
fn exim_text_with_copy() {
    let raw = message(
        "From: Mail Delivery System <Mailer-Daemon@relay.example>\n\
         To: bounces@sender.example\n\
         Subject: Mail delivery failed: returning message to sender\n\
         X-Failed-Recipients: full@dest.example\n\
         Auto-Submitted: auto-replied",
        "This message was created automatically by mail delivery software.\n\n\
         A message that you sent could not be delivered to one or more of its\n\
         recipients. This is a permanent error. The following address(es) failed:\n\n  \
         full@dest.example\n    \
         host mx.dest.example [192.0.2.9]\n    \
         SMTP error from remote mail server after RCPT TO:<full@dest.example>:\n    \
         552 5.2.2 Mailbox full\n\n\
         ------ This is a copy of the message, including all the headers. ------\n\n\
         Return-path: <bounces@sender.example>\n\
         Message-Id: <m7@sender.example>\n\
         From: shop@sender.example\nTo: full@dest.example\nSubject: offer\n\nhello\n",
    );
    let c = classify(&raw);
    assert_eq!(c.kind, Kind::Bounce);
    assert_eq!(recipients(&c), ["full@dest.example"]);
    let r = c.first().unwrap();
    assert_eq!(r.reason, "mailboxfull");
    assert_eq!(r.status.as_deref(), Some("5.2.2"));
    assert_eq!(r.hard, Some(false));
    assert_eq!(c.original_message_id.as_deref(), Some("m7@sender.example"));
}

#[test]
fn qmail_text() {
    let raw = message(
        "From: MAILER-DAEMON@mail.dest.example\nTo: bounces@sender.example\nSubject: failure notice",
        "Hi. This is the qmail-send program at mail.dest.example.\n\
         I'm afraid I wasn't able to deliver your message to the following addresses.\n\
         This is a permanent error; I've given up. Sorry it didn't work out.\n\n\
         <nobody@dest.example>:\n\
         Sorry, no mailbox here by that name. (#5.1.1)\n\n\
         --- Below this line is a copy of the message.\n\n\
         Return-Path: <bounces@sender.example>\nTo: nobody@dest.example\n\nhi\n",
    );
    let c = classify(&raw);
    assert_eq!(c.kind, Kind::Bounce);
    assert_eq!(recipients(&c), ["nobody@dest.example"]);
    assert_eq!(c.first().unwrap().reason, "userunknown");
    assert_eq!(c.first().unwrap().status.as_deref(), Some("5.1.1"));
}

#[test]
fn exchange_online_text() {
    let raw = message(
        "From: Microsoft Outlook <postmaster@dest.example>\nTo: bounces@sender.example\n\
         Subject: Undeliverable: Spring offer",
        "Delivery has failed to these recipients or groups:\n\n\
         someone@dest.example\n\
         The email address you entered couldn't be found. Please check the recipient's email address.\n\n\
         Diagnostic information for administrators:\n\n\
         Generating server: EX1.dest.example\n\n\
         someone@dest.example\n\
         Remote Server returned '550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup'\n",
    );
    let c = classify(&raw);
    assert_eq!(c.kind, Kind::Bounce);
    assert_eq!(recipients(&c), ["someone@dest.example"]);
    let r = c.first().unwrap();
    assert_eq!(r.reason, "userunknown");
    assert_eq!(r.permanent, Some(true));
}

#[test]
fn gmail_text() {
    let raw = message(
        "From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>\nTo: bounces@sender.example\n\
         Subject: Delivery Status Notification (Failure)\nX-Failed-Recipients: absent@dest.example",
        "Address not found\n\n\
         Your message wasn't delivered to absent@dest.example because the address couldn't be found, \
         or is unable to receive mail.\n\n\
         The response from the remote server was:\n\
         550 5.1.1 The email account that you tried to reach does not exist.\n",
    );
    let c = classify(&raw);
    assert_eq!(c.kind, Kind::Bounce);
    assert_eq!(recipients(&c), ["absent@dest.example"]);
    assert_eq!(c.first().unwrap().reason, "userunknown");
}

#[test]
fn sendmail_delay_warning() {
    let raw = message(
        "From: Mail Delivery Subsystem <MAILER-DAEMON@relay.example>\nTo: bounces@sender.example\n\
         Subject: Warning: could not send message for past 4 hours",
        "    **********************************************\n\
         **      THIS IS A WARNING MESSAGE ONLY      **\n\
         **  YOU DO NOT NEED TO RESEND YOUR MESSAGE  **\n\
         **********************************************\n\n\
         The original message was received at Mon, 3 Mar 2025 10:00:00 +0100\n\n\
            ----- Transcript of session follows -----\n\
         <slow@dest.example>... Deferred: Connection timed out with mx.dest.example.\n\
         Warning: message still undelivered after 4 hours\n\
         Will keep trying until message is 5 days old\n",
    );
    let c = classify(&raw);
    assert_eq!(c.kind, Kind::Bounce);
    assert_eq!(recipients(&c), ["slow@dest.example"]);
    let r = c.first().unwrap();
    assert_eq!(r.permanent, Some(false));
    assert_eq!(r.hard, Some(false));
    assert_eq!(r.reason, "expired");
}

#[test]
fn blocked_by_a_blocklist() {
    let raw = message(
        "From: MAILER-DAEMON@mx.sender.example (Mail Delivery System)\nTo: bounces@sender.example\n\
         Subject: Undelivered Mail Returned to Sender",
        "This is the mail system at host mx.sender.example.\n\n\
         <a@dest.example>: host mx.dest.example[192.0.2.1] said: 554 5.7.1 Service\n    \
         unavailable; Client host [198.51.100.4] blocked using zen.spamhaus.org (in\n    \
         reply to RCPT TO command)\n",
    );
    let c = classify(&raw);
    assert_eq!(recipients(&c), ["a@dest.example"]);
    assert_eq!(c.first().unwrap().reason, "blocked");
    assert_eq!(c.first().unwrap().hard, Some(false));
}

#[test]
fn arf_complaint() {
    let raw = message(
        "From: feedback@isp.example\nTo: fbl@sender.example\nSubject: complaint\n\
         MIME-Version: 1.0\n\
         Content-Type: multipart/report; report-type=feedback-report; boundary=\"F\"",
        "--F\nContent-Type: text/plain\n\nThis is an email abuse report.\n\
         --F\nContent-Type: message/feedback-report\n\n\
         Feedback-Type: abuse\nUser-Agent: isp-fbl/1.0\nVersion: 1\n\
         Original-Rcpt-To: <reader@isp.example>\n\
         --F\nContent-Type: message/rfc822\n\n\
         From: news@sender.example\nTo: reader@isp.example\nMessage-ID: <c9@sender.example>\n\
         X-Facteur-Id: 9\nSubject: news\n\nnews\n--F--\n",
    );
    let c = classify(&raw);
    assert_eq!(c.kind, Kind::Feedback);
    assert_eq!(c.feedback_type.as_deref(), Some("abuse"));
    assert_eq!(recipients(&c), ["reader@isp.example"]);
    assert_eq!(c.original_message_id.as_deref(), Some("c9@sender.example"));
    assert!(c
        .original_headers
        .iter()
        .any(|(k, v)| k == "X-Facteur-Id" && v == "9"));
    assert!(c.auto_submitted);
}

#[test]
fn out_of_office_in_german() {
    let raw = message(
        "From: Anna Beispiel <anna@kunde.example>\nTo: service@sender.example\n\
         Subject: Abwesenheitsnotiz: Ihre Bestellung",
        "Vielen Dank für Ihre Nachricht. Ich bin bis zum 12. Mai nicht im Büro.\n",
    );
    let c = classify(&raw);
    assert_eq!(c.kind, Kind::Autoreply);
    assert_eq!(recipients(&c), ["anna@kunde.example"]);
    assert_eq!(c.first().unwrap().reason, "vacation");
    assert!(c.auto_submitted);
}

#[test]
fn customer_reply_is_human() {
    let raw = message(
        "From: Jo <jo@kunde.example>\nTo: service@sender.example\nSubject: Re: your order 1234\n\
         In-Reply-To: <o1234@sender.example>",
        "Hello, the parcel has not been delivered to my address yet. Could you check?\n\nJo\n",
    );
    let c = classify(&raw);
    assert_eq!(c.kind, Kind::Human);
    assert!(c.recipients.is_empty());
    assert!(!c.auto_submitted);
}

#[test]
fn truncated_and_huge_input_do_not_panic() {
    let raw = message(
        "From: MAILER-DAEMON@x.example\nSubject: failure notice\n\
         Content-Type: multipart/report; boundary=\"Z\"",
        "--Z\nContent-Type: message/delivery-status\n\nFinal-Recipient: rfc822; a@",
    );
    let _ = classify(&raw);
    let mut big = message("From: a@b.example\nSubject: x", "");
    big.extend(std::iter::repeat_n(b'<', 3 * 1024 * 1024));
    let _ = classify(&big);
}

#[test]
fn exchange_in_french() {
    let raw = message(
        "From: postmaster@dest.example\nTo: bounces@sender.example\n\
         Subject: Non remis : Votre commande",
        "La remise a échoué pour ces destinataires ou groupes :\n\n\
         client@dest.example\n\
         L'adresse de messagerie que vous avez entrée est introuvable.\n\n\
         client@dest.example\n\
         Remote Server returned '550 5.1.1 RESOLVER.ADR.RecipNotFound; not found'\n",
    );
    let c = classify(&raw);
    assert_eq!(c.kind, Kind::Bounce);
    assert_eq!(recipients(&c), ["client@dest.example"]);
    assert_eq!(c.first().unwrap().reason, "userunknown");
}

#[test]
fn read_receipt_is_automatic() {
    let raw = message(
        "From: Jo <jo@kunde.example>\nTo: service@sender.example\nSubject: Read: your order\n\
         MIME-Version: 1.0\n\
         Content-Type: multipart/report; report-type=disposition-notification; boundary=\"R\"",
        "--R\nContent-Type: text/plain\n\nYour message was read.\n\
         --R\nContent-Type: message/disposition-notification\n\n\
         Final-Recipient: rfc822; jo@kunde.example\nDisposition: manual-action/MDN-sent-manually; displayed\n--R--\n",
    );
    let c = classify(&raw);
    assert_eq!(c.kind, Kind::Autoreply);
    assert!(c.recipients.is_empty());
    assert!(c.auto_submitted);
}

#[test]
fn a_mime_tree_the_parser_chokes_on_still_classifies() {
    // parts after the closing boundary: mail-parser 0.11.9 panics on this
    // ("Invalid part ID"); the classifier reads the headers and raw body
    let raw = message(
        "From: MAILER-DAEMON@mx.dest.example\nTo: bounces@sender.example\n\
         Subject: Undelivered Mail Returned to Sender\n\
         Content-Type: multipart/mixed; boundary=\"B\"",
        "--B--\nX-A: 1\nContent-Type: message/rfc822\n\nx\nContent-Type: message/rfc822\n\n--\n\n\
         <lost@dest.example>: host mx.dest.example said: 550 5.1.1 user unknown\n\n--B--\n",
    );
    let c = classify(&raw);
    assert_eq!(c.kind, Kind::Bounce);
    assert_eq!(recipients(&c), ["lost@dest.example"]);
}
