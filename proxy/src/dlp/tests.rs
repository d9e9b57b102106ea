use crds::policy::{Direction, DlpAction, DlpRule};
use serde_json::json;

use super::*;

fn engine_for(det: &str) -> Engine {
    Engine::compile(&[(
        "p".into(),
        DlpRule {
            name: "r".into(),
            detectors: vec![id(det).into()],
            ..DlpRule::default()
        },
    )])
    .unwrap()
}

/// The matched substrings (test-only: findings never carry them).
fn found(det: &str, text: &str) -> Vec<String> {
    engine_for(det)
        .scan_text(text)
        .into_iter()
        .map(|f| text.chars().skip(f.start).take(f.end - f.start).collect())
        .collect()
}

fn assert_finds(det: &str, text: &str, expected: &str) {
    assert_eq!(
        found(det, text),
        vec![expected.to_string()],
        "{det} in {text:?}"
    );
}

fn assert_none(det: &str, text: &str) {
    assert!(
        found(det, text).is_empty(),
        "{det} must not fire on {text:?}"
    );
}

/// The detector named `name` (the tests name detectors as policies do).
fn id(name: &str) -> Detector {
    Detector::from_id(name).unwrap_or_else(|| panic!("no detector {name:?}"))
}

fn rule(name: &str, dets: &[&str], action: DlpAction) -> DlpRule {
    DlpRule {
        name: name.into(),
        detectors: dets.iter().map(|d| id(d).into()).collect(),
        action,
        ..DlpRule::default()
    }
}

// ---------------------------------------------------------------- detectors

#[test]
fn credit_cards_with_valid_luhn_and_issuer_are_found_in_common_formats() {
    for (text, card) in [
        ("card 4111111111111111 ok", "4111111111111111"),
        ("card: 4111 1111 1111 1111.", "4111 1111 1111 1111"),
        ("4111-1111-1111-1111", "4111-1111-1111-1111"),
        ("mc 5555555555554444", "5555555555554444"),
        ("amex 3782 822463 10005 exp", "3782 822463 10005"),
        ("amex 378282246310005", "378282246310005"),
        ("discover 6011111111111117", "6011111111111117"),
        ("jcb 3530111333300000", "3530111333300000"),
        ("4111 1111 1111 1111 123", "4111 1111 1111 1111"),
    ] {
        assert_finds("creditCard", text, card);
    }
}

#[test]
fn credit_card_near_misses_do_not_fire() {
    for text in [
        "4111111111111112",     // Luhn fails
        "4111 1111 1111 1112",  // Luhn fails
        "1234567812345670",     // Luhn ok, no issuer starts with 1
        "4111 1111-1111 1111",  // mixed separators
        "id x4111111111111111", // glued to a word
        "0000000000000000",     // all zeros
        "ts 1714567890123 ms",  // epoch milliseconds
        "41111111111111",       // Visa prefix with a Visa-impossible length
    ] {
        assert_none("creditCard", text);
    }
}

#[test]
fn us_ssns_in_valid_ranges_are_found() {
    assert_finds("usSsn", "SSN 123-45-6789.", "123-45-6789");
    assert_finds("usSsn", "ssn: 536 22 1234", "536 22 1234");
}

#[test]
fn ssn_near_misses_with_invalid_area_group_or_serial_do_not_fire() {
    for text in [
        "000-12-3456",
        "666-12-3456",
        "900-12-3456",
        "987-65-4321",
        "123-00-4567",
        "123-45-0000",
        "123456789",
        "078-05-1120",
        "id 11-123-45-6789",
        "x123-45-6789",
    ] {
        assert_none("usSsn", text);
    }
}

#[test]
fn ibans_with_correct_check_digits_are_found_compact_and_grouped() {
    assert_finds(
        "iban",
        "pay to GB82 WEST 1234 5698 7654 32 today",
        "GB82 WEST 1234 5698 7654 32",
    );
    assert_finds("iban", "DE89370400440532013000", "DE89370400440532013000");
    assert_finds(
        "iban",
        "iban=FR1420041010050500013M02606,",
        "FR1420041010050500013M02606",
    );
}

#[test]
fn ibans_with_wrong_check_digit_length_or_country_do_not_fire() {
    for text in [
        "GB82WEST12345698765433",
        "DE89370400440532013001",
        "DE8937040044053201300",
        "XX89370400440532013000",
        "ADE89370400440532013000",
    ] {
        assert_none("iban", text);
    }
}

#[test]
fn emails_are_found_and_lookalikes_are_not() {
    assert_finds(
        "email",
        "mail john.doe+x@mail.example.com, thanks",
        "john.doe+x@mail.example.com",
    );
    assert_finds("email", "<a href=\"mailto:a@b.io\">", "a@b.io");
    for text in [
        "user@localhost",
        "icon@2x.png",
        "@example.com",
        "foo@bar..com",
        "x@-bad.com",
        "a@b.c",
    ] {
        assert_none("email", text);
    }
}

#[test]
fn phone_numbers_in_e164_and_nanp_formats_are_found() {
    for (text, phone) in [
        ("call +1 415 555 2671 now", "+1 415 555 2671"),
        ("tel:+14155552671", "+14155552671"),
        ("UK +44 20 7946 0958", "+44 20 7946 0958"),
        ("(415) 555-2671", "(415) 555-2671"),
        ("office 415-555-2671.", "415-555-2671"),
        ("415.555.2671", "415.555.2671"),
        ("1-800-555-0199", "1-800-555-0199"),
    ] {
        assert_finds("phone", text, phone);
    }
}

#[test]
fn phone_near_misses_do_not_fire() {
    for text in [
        "123-456-7890",    // area code starts with 1
        "2024-05-01",      // date
        "415 555 2671",    // bare spaces: too ambiguous
        "+123",            // too short
        "+0 415 555 2671", // country code 0
        "415-555-2671-99-12",
        "order 4155552671",
        "+1 115 555 2671", // invalid NANP area
    ] {
        assert_none("phone", text);
    }
}

#[test]
fn ipv4_addresses_are_found_but_version_strings_are_not() {
    assert_finds("ipv4", "from 192.168.1.10 port", "192.168.1.10");
    assert_finds("ipv4", "dns=8.8.8.8,", "8.8.8.8");
    assert_finds("ipv4", "http://10.0.0.1:8080/x", "10.0.0.1");
    for text in [
        "v1.2.3.4",
        "version 1.2.3.4",
        "Version: 10.0.0.1",
        "256.1.1.1",
        "1.2.3.4.5",
        "01.02.03.04",
        "release-1.2.3.4",
    ] {
        assert_none("ipv4", text);
    }
}

#[test]
fn ipv6_addresses_are_found_and_times_or_paths_are_not() {
    assert_finds("ipv6", "addr 2001:db8::1 up", "2001:db8::1");
    assert_finds(
        "ipv6",
        "fe80::1ff:fe23:4567:890a",
        "fe80::1ff:fe23:4567:890a",
    );
    assert_finds(
        "ipv6",
        "[2001:0db8:85a3:0000:0000:8a2e:0370:7334]:443",
        "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
    );
    for text in [
        "at 12:30:45",
        "std::fmt::Debug",
        "mac 00:1a:2b:3c:4d:5e",
        "a :: b",
        "dead::beef",
    ] {
        assert_none("ipv6", text);
    }
}

const JWT: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";

#[test]
fn jwts_with_an_alg_header_are_found() {
    assert_finds("jwt", &format!("Authorization: Bearer {JWT}"), JWT);
}

#[test]
fn jwt_lookalikes_without_alg_or_segments_do_not_fire() {
    // Header {"foo":"bar"}: no alg.
    assert_none("jwt", "eyJmb28iOiJiYXIifQ.eyJzdWIiOiIxIn0.c2lnbmF0dXJl");
    assert_none("jwt", "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9");
    // alg HS256 with an empty signature.
    assert_none(
        "jwt",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxIn0.",
    );
}

#[test]
fn private_key_blocks_are_found_whole() {
    let key =
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\nabc+/=\n-----END RSA PRIVATE KEY-----";
    assert_finds("privateKey", &format!("key:\n{key}\nrest"), key);
    let open = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk";
    assert_finds("privateKey", open, open);
    assert_none(
        "privateKey",
        "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----",
    );
    assert_none(
        "privateKey",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
    );
}

#[test]
fn an_unterminated_private_key_in_long_non_ascii_text_does_not_panic() {
    let text = format!("-----BEGIN PRIVATE KEY-----\nMIIE{}", "é".repeat(40000));
    assert_eq!(found("privateKey", &text).len(), 1);
}

#[test]
fn cloud_and_saas_tokens_are_found_by_prefix_and_shape() {
    let gh = format!("ghp_{}", "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG5");
    let pat = format!(
        "github_pat_{}_{}",
        "A".repeat(11) + "b1c2d3e4f5g",
        "x9".repeat(29) + "z"
    );
    let google = format!("AIza{}", &"Sy3Xk9Lm2Np4Qr6St8Uv0Wx1Yz5Ab7Cd9Ef"[..35]);
    for (det, text) in [
        ("awsAccessKey", "AKIAIOSFODNN7EXAMPLE".to_string()),
        ("awsAccessKey", "ASIAY34FZKBOKMUTVV7A".to_string()),
        ("githubToken", gh.clone()),
        ("githubToken", pat),
        ("gitlabToken", "glpat-xK9mQ2vL7nR4tW8yZ1aB".to_string()),
        (
            "slackToken",
            "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx".to_string(),
        ),
        ("googleApiKey", google),
        ("stripeKey", "sk_live_4eC39HqLyjWDarjtT1zdp7dc".to_string()),
        (
            "openaiKey",
            "sk-proj-Ab3De5Gh7Jk9Mn1Pq3St5Vw7Yz9Bc1De3Fg5".to_string(),
        ),
        (
            "anthropicKey",
            format!("sk-ant-api03-{}", "Zx8Yw7Vu6Ts5Rq4Po3Nm2Lk1Jh0Gf9Ed8Cb7Aa"),
        ),
    ] {
        assert_finds(det, &format!("value: {text} end"), &text);
        assert_finds(det, &format!("\"{text}\""), &text);
    }
}

#[test]
fn token_near_misses_do_not_fire() {
    for (det, text) in [
        ("awsAccessKey", "AKIAIOSFODNN7EXAMPL"),    // one short
        ("awsAccessKey", "AKIAIOSFODNN7EXAMPLEXY"), // too long
        ("awsAccessKey", "xAKIAIOSFODNN7EXAMPLE"),  // glued
        ("awsAccessKey", "AKIAABCDEFGHIJKLMNOP"),   // no digit and an alphabet run: a placeholder
        ("awsAccessKey", "AKIAEXAMPLEEXAMPLEEE"),   // no digit and one letter six times
        ("awsAccessKey", "AKIAIMAGEANDAUDIOURL"),   // no digit and vowels of words
        ("githubToken", "ghp_short123"),
        ("gitlabToken", "glpat-short"),
        ("slackToken", "xoxb-notatoken"),
        ("googleApiKey", "AIzaTooShort123"),
        ("stripeKey", "sk_test_4eC39HqLyjWDarjtT1zdp7dc"),
        ("openaiKey", "sk-this-is-not-a-key-at-all-really"),
        ("openaiKey", "task-1234567890abcdefghijkl"),
        ("anthropicKey", "sk-ant-short"),
    ] {
        assert_none(det, text);
    }
    // An Anthropic key is not also reported as an OpenAI key.
    assert_none(
        "openaiKey",
        &format!("sk-ant-api03-{}", "Zx8Yw7Vu6Ts5Rq4Po3Nm2Lk1Jh0Gf9Ed8Cb7Aa"),
    );
}

#[test]
fn card_digits_inside_longer_numbers_and_tokens_do_not_fire() {
    // 3935 0590 0423 1239 passes Luhn, but the grouping goes on: an IBAN with a typo.
    assert_none("creditCard", "sent as DE83 3935 0590 0423 1239 30. Please");
    assert_none("creditCard", "ref 12 4111 1111 1111 1111 34");
    // 4247463409592 passes Luhn, but it is the middle of a Slack token.
    assert_none(
        "creditCard",
        "xoxb-194511006526-4247463409592-1PnCXjJSZ2ZV0eKNjVC",
    );
    assert_none("creditCard", "build-4111111111111111.tar");
    // Still cards: alone, at a sentence end, in a URL path, grouped.
    assert_finds("creditCard", "card 4111111111111111.", "4111111111111111");
    assert_finds(
        "creditCard",
        "GET /cards/4111111111111111/limits",
        "4111111111111111",
    );
    assert_finds(
        "creditCard",
        "(4111-1111-1111-1111) by support",
        "4111-1111-1111-1111",
    );
}

#[test]
fn jwts_at_the_end_of_a_sentence_are_found_without_the_full_stop() {
    assert_finds("jwt", &format!("... token {JWT}."), JWT);
    assert_finds("jwt", &format!("Use {JWT}. Then retry."), JWT);
    assert_finds("jwt", &format!("(see {JWT}).\nnext"), JWT);
    assert_finds("jwt", &format!("token={JWT}.\"}}"), JWT);
}

#[test]
fn dotted_values_longer_than_a_jwt_do_not_fire() {
    // A fourth segment glued on with a dot (a JWE has five): not a JWT.
    assert_none("jwt", &format!("{JWT}.c2Vn"));
    assert_none("jwt", &format!("{JWT}.c2Vn.dGFn"));
    // The full-stop rule does not rescue a header without `alg`.
    assert_none("jwt", "eyJmb28iOiJiYXIifQ.eyJzdWIiOiIxIn0.c2lnbmF0dXJl.");
}

#[test]
fn aws_access_key_ids_without_a_digit_are_found() {
    for id in ["AKIAJVTQWBZLXKDRMHPY", "ASIAQWRTZPSDFGHXKBMN"] {
        assert_finds("awsAccessKey", &format!("aws_access_key_id = {id}"), id);
        assert_finds("awsAccessKey", &format!("\"{id}\""), id);
    }
}

#[test]
fn settings_of_a_secret_are_not_the_secret() {
    for text in [
        "password_policy: min_length=12",
        "passwordPolicy: \"min_length=12,require_upper=1\"",
        "password_min_length=12",
        "PASSWORD_MAX_AGE=90d",
        "token_ttl: 3600s",
        "tokenExpiry=2026-12-31T23:59:59Z",
        "secret_name: db-creds-7f9a2",
        "api_key_file=/run/secrets/k9x",
        "password: min_length=12",
        "secret: v2.0",
    ] {
        assert_none("genericSecret", text);
    }
    let e = engine_for("genericSecret");
    let mut v = json!({"password_policy": "min_length=12,upper=1", "secretName": "db-creds-7f9a2"});
    assert!(
        e.scan(&mut v, Scope::Arguments, "s", "t")
            .findings
            .is_empty()
    );
}

#[test]
fn secrets_next_to_setting_like_names_still_fire() {
    for (text, secret) in [
        ("password: Xk9#mP2$vL7q", "Xk9#mP2$vL7q"),
        ("db_password=s3cr3t_v4lue9", "s3cr3t_v4lue9"),
        (
            "password_hash=a8f5f167f44f4964e6c998dee827110c",
            "a8f5f167f44f4964e6c998dee827110c",
        ),
        ("secret: min_length=12x7Qz", "min_length=12x7Qz"),
        ("newPassword: \"Tr0ub4dor&3x\"", "Tr0ub4dor&3x"),
        ("It was password=x7Qz9kLm2v. Rotate it.", "x7Qz9kLm2v"),
        (
            "apiToken: %nQw%3Kdjp89pned1r55Dbm monthly",
            "%nQw%3Kdjp89pned1r55Dbm",
        ),
        ("password=$x9Lq2#vT7mZ", "$x9Lq2#vT7mZ"),
        ("password=\"x7Qz9kLm2v.\"", "x7Qz9kLm2v."),
    ] {
        assert_finds("genericSecret", text, secret);
    }
    let e = engine_for("genericSecret");
    let mut v = json!({"password": "Xk9#mP2$vL7q", "password_policy": "min_length=12"});
    let r = e.scan(&mut v, Scope::Arguments, "s", "t");
    assert_eq!(r.findings.len(), 1);
    assert_eq!(r.findings[0].path, "/password");
}

#[test]
fn generic_secrets_assigned_to_key_like_names_are_found() {
    assert_finds(
        "genericSecret",
        "password=S3cr3tP4ssw0rd! next",
        "S3cr3tP4ssw0rd!",
    );
    assert_finds(
        "genericSecret",
        r#"{"api_key": "a8f5f167f44f4964e6c998dee827110c"}"#,
        "a8f5f167f44f4964e6c998dee827110c",
    );
    assert_finds(
        "genericSecret",
        "export DB_PASSWORD='hX9#kL2$mQ7p'",
        "hX9#kL2$mQ7p",
    );
    assert_finds(
        "genericSecret",
        "apiToken: Zm9vYmFyMTIzNDU2",
        "Zm9vYmFyMTIzNDU2",
    );
    assert_finds(
        "genericSecret",
        "https://x.io/cb?access_token=ya29A0ARrdaM9xQ&x=1",
        "ya29A0ARrdaM9xQ",
    );
}

#[test]
fn random_words_near_key_names_do_not_fire() {
    for text in [
        "password: required",
        "token: expired",
        "max_tokens=4096",
        "tokenizer=cl100k_base",
        "password_policy=strict-mode-enabled",
        "secret: ${DB_SECRET}",
        "the password is long",
        "secret=Something",
        "token_url=https://auth.example.com/oauth/token",
        "password=********",
        "secret_path=/etc/secrets/db-01",
        "api_key: <your-key-here>",
        "password=%DB_PASSWORD%",
        "password: $DB_PASSWORD_2",
        "secret='%(secret)s'",
        "token: $(cat /run/token)",
    ] {
        assert_none("genericSecret", text);
    }
}

#[test]
fn secret_key_names_in_json_objects_flag_their_values() {
    let e = engine_for("genericSecret");
    let mut v = json!({"client_secret": "9f8e7d6c5b4a3f2e1d0c", "secretary": "9f8e7d6c5b4a3f2e1d0c", "token": "expired"});
    let r = e.scan(&mut v, Scope::Arguments, "s", "t");
    assert_eq!(r.findings.len(), 1);
    assert_eq!(r.findings[0].path, "/client_secret");
}

#[test]
fn detector_ids_are_stable_camel_case() {
    let ids: Vec<&str> = Detector::ALL.iter().map(|d| d.id()).collect();
    assert_eq!(
        ids,
        [
            "creditCard",
            "usSsn",
            "iban",
            "email",
            "phone",
            "ipv4",
            "ipv6",
            "jwt",
            "privateKey",
            "awsAccessKey",
            "githubToken",
            "gitlabToken",
            "slackToken",
            "googleApiKey",
            "stripeKey",
            "openaiKey",
            "anthropicKey",
            "genericSecret"
        ]
    );
    for d in Detector::ALL {
        assert_eq!(Detector::from_id(d.id()), Some(d));
    }
}

// ---------------------------------------------------------------- engine

#[test]
fn block_reports_the_rule_name_and_leaves_the_value_untouched() {
    let e = Engine::compile(&[(
        "pol".into(),
        rule("no-cards", &["creditCard"], DlpAction::Block),
    )])
    .unwrap();
    let mut v = json!({"note": "card 4111 1111 1111 1111 please"});
    let before = v.clone();
    let r = e.scan(&mut v, Scope::Arguments, "crm", "create_ticket");
    assert!(r.is_blocked());
    assert_eq!(r.blocked_by.as_deref(), Some("no-cards"));
    assert_eq!(r.findings[0].path, "/note");
    assert_eq!((r.findings[0].start, r.findings[0].end), (5, 24));
    assert_eq!(v, before);
}

#[test]
fn redact_keeps_json_valid_and_replaces_only_the_match() {
    let e = Engine::compile(&[(
        "pol".into(),
        rule("mask", &["email", "usSsn"], DlpAction::Redact),
    )])
    .unwrap();
    let mut v =
        json!({"rows": [{"who": "Mail \"jane@corp.example.com\" re: 123-45-6789", "n": 1}]});
    let r = e.scan(&mut v, Scope::Results, "hr", "lookup");
    assert_eq!(r.action, Some(DlpAction::Redact));
    assert_eq!(
        v,
        json!({"rows": [{"who": "Mail \"[REDACTED:email]\" re: [REDACTED:usSsn]", "n": 1}]})
    );
    let text = serde_json::to_string(&v).unwrap();
    assert!(serde_json::from_str::<serde_json::Value>(&text).is_ok());
    assert_eq!(r.detector_counts().get("email"), Some(&1));
}

#[test]
fn strictest_action_wins_across_rules_and_only_redacting_rules_rewrite() {
    let rules = vec![
        ("a".into(), rule("log-emails", &["email"], DlpAction::Log)),
        (
            "a".into(),
            rule("redact-ssn", &["usSsn"], DlpAction::Redact),
        ),
    ];
    let e = Engine::compile(&rules).unwrap();
    let mut v = json!("a@b.io 123-45-6789");
    let r = e.scan(&mut v, Scope::Results, "s", "t");
    assert_eq!(r.action, Some(DlpAction::Redact));
    assert_eq!(v, json!("a@b.io [REDACTED:usSsn]"));

    let mut rules = rules;
    rules.push((
        "b".into(),
        rule("block-email", &["email"], DlpAction::Block),
    ));
    let e = Engine::compile(&rules).unwrap();
    let mut v = json!("a@b.io 123-45-6789");
    let r = e.scan(&mut v, Scope::Results, "s", "t");
    assert_eq!(r.action, Some(DlpAction::Block));
    assert_eq!(r.blocked_by.as_deref(), Some("block-email"));
    assert_eq!(v, json!("a@b.io 123-45-6789"));
}

#[test]
fn allow_list_values_and_regexes_never_fire() {
    let mut r = rule("emails", &["email"], DlpAction::Block);
    r.allow = vec![
        "support@corp.example.com".into(),
        r".*@example\.org".into(),
        "(".into(),
    ];
    let e = Engine::compile(&[("p".into(), r)]).unwrap();
    let mut v = json!(["support@corp.example.com", "bob@example.org", "eve@evil.io"]);
    let rep = e.scan(&mut v, Scope::Arguments, "s", "t");
    assert_eq!(rep.findings.len(), 1);
    assert_eq!(rep.findings[0].path, "/2");
}

#[test]
fn rules_apply_only_to_matching_server_tool_globs_and_direction() {
    let mut r = rule("crm-only", &["email"], DlpAction::Block);
    r.servers = vec!["crm-*".into()];
    r.tools = vec!["export_*".into()];
    r.direction = Direction::Results;
    let e = Engine::compile(&[("p".into(), r)]).unwrap();
    let scan = |dir, server, tool| e.scan(&mut json!("x@y.io"), dir, server, tool).is_blocked();
    assert!(scan(Scope::Results, "crm-eu", "export_contacts"));
    assert!(!scan(Scope::Arguments, "crm-eu", "export_contacts"));
    assert!(!scan(Scope::Results, "wiki", "export_contacts"));
    assert!(!scan(Scope::Results, "crm-eu", "search"));
}

#[test]
fn escaped_json_strings_cannot_hide_data() {
    let e = Engine::compile(&[(
        "p".into(),
        rule("cards", &["creditCard", "email"], DlpAction::Block),
    )])
    .unwrap();
    let raw = r#"{"a": "4111\u003111111111111", "b": "x\u0040corp.example.com"}"#;
    let mut v: serde_json::Value = serde_json::from_str(raw).unwrap();
    let r = e.scan(&mut v, Scope::Arguments, "s", "t");
    let dets: Vec<&str> = r.findings.iter().map(|f| f.detector).collect();
    assert_eq!(dets, ["creditCard", "email"]);
    assert_eq!(scan_document(&e, raw).len(), 2);
}

#[test]
fn object_keys_are_scanned_and_redacted_only_when_configured() {
    let mut r = rule("keys", &["email"], DlpAction::Redact);
    let e = Engine::compile(&[("p".into(), r.clone())]).unwrap();
    let mut v = json!({"jane@corp.example.com": 1});
    assert!(e.scan(&mut v, Scope::Results, "s", "t").findings.is_empty());

    r.scan_keys = true;
    let e = Engine::compile(&[("p".into(), r)]).unwrap();
    let mut v = json!({"a": {"jane@corp.example.com": 1, "k": 2}});
    let rep = e.scan(&mut v, Scope::Results, "s", "t");
    assert_eq!(rep.findings.len(), 1);
    assert!(rep.findings[0].key);
    assert_eq!(rep.findings[0].path, "/a");
    assert_eq!(v, json!({"a": {"[REDACTED:email]": 1, "k": 2}}));
}

#[test]
fn card_numbers_stored_as_json_integers_are_found() {
    let e =
        Engine::compile(&[("p".into(), rule("c", &["creditCard"], DlpAction::Redact))]).unwrap();
    let mut v = json!({"pan": 4111111111111111u64, "count": 12});
    e.scan(&mut v, Scope::Arguments, "s", "t");
    assert_eq!(v, json!({"pan": "[REDACTED:creditCard]", "count": 12}));
}

#[test]
fn offsets_are_character_offsets_in_non_ascii_strings() {
    let e = engine_for("email");
    let text = "héllo wörld a@b.io";
    let f = e.scan_text(text);
    assert_eq!((f[0].start, f[0].end), (12, 18));
    let mut v = json!({"s": text});
    let r = e.scan(&mut v, Scope::Results, "s", "t");
    assert_eq!((r.findings[0].start, r.findings[0].end), (12, 18));
}

#[test]
fn custom_patterns_fire_and_bad_ones_are_named_in_the_error() {
    let mut r = rule("tickets", &[], DlpAction::Redact);
    r.patterns = vec![r"PROJ-\d{4}".into()];
    let e = Engine::compile(&[("p".into(), r.clone())]).unwrap();
    let mut v = json!("see PROJ-1234 and PROJ-99");
    let rep = e.scan(&mut v, Scope::Results, "s", "t");
    assert_eq!(rep.findings[0].detector, "pattern");
    assert_eq!(v, json!("see [REDACTED:pattern] and PROJ-99"));

    r.patterns.push("(unclosed".into());
    let err = Engine::compile(&[("pol".into(), r)])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"tickets\"") && err.contains("\"pol\"") && err.contains("pattern #1"),
        "{err}"
    );
}

#[test]
fn a_rule_without_detectors_or_patterns_is_an_error() {
    // Unknown detector names cannot reach the engine: `DlpRule::detectors` is the crds enum.
    assert!(Engine::compile(&[("p".into(), rule("r", &[], DlpAction::Log))]).is_err());
}

#[test]
fn findings_and_reports_never_contain_the_matched_value() {
    let e = Engine::compile(&[(
        "p".into(),
        rule("r", &["creditCard", "awsAccessKey"], DlpAction::Block),
    )])
    .unwrap();
    let mut v = json!({"x": "4111111111111111 AKIAIOSFODNN7EXAMPLE"});
    let r = e.scan(&mut v, Scope::Arguments, "s", "t");
    let dbg = format!("{r:?} {e:?}");
    assert!(!dbg.contains("4111111111111111") && !dbg.contains("AKIAIOSFODNN7EXAMPLE"));
    assert_eq!(r.findings.len(), 2);
}

#[test]
fn overlapping_matches_redact_to_one_marker() {
    let e = Engine::compile(&[(
        "p".into(),
        DlpRule {
            name: "r".into(),
            detectors: vec![Detector::GenericSecret.into(), Detector::OpenaiKey.into()],
            action: DlpAction::Redact,
            ..DlpRule::default()
        },
    )])
    .unwrap();
    let mut v = json!("api_key=sk-proj-Ab3De5Gh7Jk9Mn1Pq3St5Vw7Yz9Bc1De3Fg5 ok");
    e.scan(&mut v, Scope::Arguments, "s", "t");
    assert_eq!(v.as_str().unwrap().matches("[REDACTED:").count(), 1, "{v}");
    assert!(
        v.as_str().unwrap().starts_with("api_key=[REDACTED:")
            && v.as_str().unwrap().ends_with("] ok")
    );
}

#[test]
fn all_detectors_engine_scans_documents_as_text_when_not_json() {
    let e = Engine::all_detectors();
    let f = scan_document(&e, "ip 10.1.2.3 and mail a@b.io");
    let dets: Vec<&str> = f.iter().map(|f| f.detector).collect();
    assert_eq!(dets, ["ipv4", "email"]);
    assert_eq!((f[0].start, f[0].end, f[0].path.as_str()), (3, 11, ""));
}

#[test]
fn dlp_rule_globs_are_the_api_globs_where_a_question_mark_is_literal() {
    assert!(glob_match("crm-*", "crm-eu"));
    assert!(!glob_match("a?c*", "abcdef"));
}
