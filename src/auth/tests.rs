//! Client assertions: the valid ones pass, and every attack the SMART test kit and the issue list
//! is refused.

use base64::Engine as _;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

use super::assertion::{verify, Replays};
use super::clients::{Client, Registry, Role};
use super::tokens::Issuer;

const TOKEN_URL: &str = "https://vbc.example/auth/token";

fn data(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/data/auth/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("test key")
}

fn registry() -> Registry {
    let jwks: JwkSet = serde_json::from_slice(&data("jwks.json")).expect("jwks");
    Registry::new(vec![Client {
        client_id: "payer-app".into(),
        party: "Organization/org-aetna".into(),
        role: Role::Payer,
        scope: "system/MeasureReport.rs system/Patient.rs".into(),
        jwks: Some(jwks),
        jwks_uri: None,
        registration: String::new(),
    }])
}

fn now() -> i64 {
    jsonwebtoken::get_current_timestamp() as i64
}

fn claims(jti: &str) -> serde_json::Value {
    let at = now();
    json!({"iss": "payer-app", "sub": "payer-app", "aud": TOKEN_URL, "exp": at + 240, "jti": jti})
}

fn sign(
    alg: Algorithm,
    kid: Option<&str>,
    key: &EncodingKey,
    claims: &serde_json::Value,
) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_string);
    h.typ = Some("JWT".into());
    encode(&h, claims, key).expect("sign")
}

fn es() -> EncodingKey {
    EncodingKey::from_ec_pem(&data("es384-private.pem")).expect("es key")
}

fn rs() -> EncodingKey {
    EncodingKey::from_rsa_pem(&data("rs384-private.pem")).expect("rs key")
}

fn check(token: &str) -> Result<String, String> {
    let reg = registry();
    verify(token, &reg, TOKEN_URL, &Replays::default(), now())
        .map(|c| c.client_id.clone())
        .map_err(|e| e.0)
}

#[test]
fn valid_es384_and_rs384_assertions_authenticate_the_client() {
    assert_eq!(
        check(&sign(Algorithm::ES384, Some("es-1"), &es(), &claims("a"))),
        Ok("payer-app".into())
    );
    assert_eq!(
        check(&sign(Algorithm::RS384, Some("rs-1"), &rs(), &claims("b"))),
        Ok("payer-app".into())
    );
}

#[test]
fn every_attack_is_refused() {
    let at = now();
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT", "kid": "es-1"})),
        b64(claims("n"))
    );
    let hs_with_public = sign(
        Algorithm::HS256,
        Some("es-1"),
        &EncodingKey::from_secret(&data("es384-public.pem")),
        &claims("h"),
    );
    let other_key = EncodingKey::from_ec_pem(&data("es384-other-private.pem")).expect("other");
    let mut expired = claims("e");
    expired["exp"] = json!(at - 1);
    let mut too_long = claims("l");
    too_long["exp"] = json!(at + 301);
    let mut not_yet = claims("y");
    not_yet["nbf"] = json!(at + 3600);
    let mut wrong_aud = claims("w");
    wrong_aud["aud"] = json!("https://elsewhere.example/token");
    let mut iss_sub = claims("s");
    iss_sub["sub"] = json!("someone-else");
    let mut stranger = claims("x");
    stranger["iss"] = json!("unknown-app");
    stranger["sub"] = json!("unknown-app");
    let mut no_jti = claims("j");
    no_jti.as_object_mut().expect("obj").remove("jti");
    let mut no_exp = claims("k");
    no_exp.as_object_mut().expect("obj").remove("exp");
    let good = sign(Algorithm::ES384, Some("es-1"), &es(), &claims("t"));
    let (head, rest) = good.split_once('.').expect("jwt");
    let (body, sig) = rest.split_once('.').expect("jwt");
    let mut sig_bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sig)
        .expect("sig");
    sig_bytes[10] ^= 1;
    let tampered = format!(
        "{head}.{body}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig_bytes)
    );
    let mut no_typ = Header::new(Algorithm::ES384);
    no_typ.kid = Some("es-1".into());
    no_typ.typ = None;
    let untyped = encode(&no_typ, &claims("u"), &es()).expect("sign");
    let attacks = [
        ("alg none", none, "not a signed JWT"),
        (
            "HS256 signed with the public key",
            hs_with_public,
            "HS256 is not accepted",
        ),
        (
            "ES256 is not accepted",
            sign(
                Algorithm::ES256,
                Some("es-1"),
                &EncodingKey::from_ec_pem(&p256()).expect("p256"),
                &claims("2"),
            ),
            "ES256 is not accepted",
        ),
        (
            "unknown kid",
            sign(Algorithm::ES384, Some("nope"), &es(), &claims("k1")),
            "no key 'nope'",
        ),
        (
            "no kid",
            sign(Algorithm::ES384, None, &es(), &claims("k2")),
            "no kid",
        ),
        (
            "RSA signature under an EC kid",
            sign(Algorithm::RS384, Some("es-1"), &rs(), &claims("k3")),
            "not a key for RS384",
        ),
        (
            "signed by an unregistered key",
            sign(Algorithm::ES384, Some("es-1"), &other_key, &claims("k4")),
            "InvalidSignature",
        ),
        (
            "expired",
            sign(Algorithm::ES384, Some("es-1"), &es(), &expired),
            "xpired",
        ),
        (
            "exp more than 5 minutes ahead",
            sign(Algorithm::ES384, Some("es-1"), &es(), &too_long),
            "300 s ahead",
        ),
        (
            "not yet valid",
            sign(Algorithm::ES384, Some("es-1"), &es(), &not_yet),
            "ImmatureSignature",
        ),
        (
            "wrong aud",
            sign(Algorithm::ES384, Some("es-1"), &es(), &wrong_aud),
            "InvalidAudience",
        ),
        (
            "iss not sub",
            sign(Algorithm::ES384, Some("es-1"), &es(), &iss_sub),
            "iss and sub",
        ),
        (
            "unregistered issuer",
            sign(Algorithm::ES384, Some("es-1"), &es(), &stranger),
            "not a registered client",
        ),
        (
            "no jti",
            sign(Algorithm::ES384, Some("es-1"), &es(), &no_jti),
            "jti",
        ),
        (
            "no exp",
            sign(Algorithm::ES384, Some("es-1"), &es(), &no_exp),
            "exp",
        ),
        ("tampered signature", tampered, "InvalidSignature"),
        ("typ missing", untyped, "typ must be JWT"),
        ("not a JWT", "garbage".to_string(), "not a signed JWT"),
    ];
    for (what, token, why) in attacks {
        match check(&token) {
            Ok(_) => panic!("{what} was accepted"),
            Err(e) => assert!(e.contains(why), "{what} refused for another reason: {e}"),
        }
    }
}

fn p256() -> Vec<u8> {
    // ES256 must be refused whatever the key
    data("es256-private.pem")
}

#[test]
fn a_replayed_jti_is_refused_within_its_lifetime() {
    let at = now();
    let reg = registry();
    let replays = Replays::default();
    let token = sign(Algorithm::ES384, Some("es-1"), &es(), &claims("once"));
    assert!(verify(&token, &reg, TOKEN_URL, &replays, at).is_ok());
    let again = verify(&token, &reg, TOKEN_URL, &replays, at);
    assert!(again.is_err_and(|e| e.0.contains("jti")));
}

#[test]
fn access_tokens_carry_party_role_and_scope_and_expire() {
    let reg = registry();
    let client = reg.get("payer-app").expect("client");
    let issuer = Issuer::new("https://vbc.example", b"a test secret of enough length!!");
    let now = jsonwebtoken::get_current_timestamp() as i64;
    let token = issuer
        .issue(client, "system/MeasureReport.rs", now)
        .expect("issue");
    let c = issuer.verify(&token).expect("verify");
    assert_eq!(
        (c.sub.as_str(), c.party.as_str(), c.role),
        ("payer-app", "Organization/org-aetna", Role::Payer)
    );
    assert_eq!(c.scope, "system/MeasureReport.rs");
    assert_eq!(
        c.registration, client.registration,
        "bound to the registration"
    );
    let old = issuer
        .issue(client, "system/MeasureReport.rs", now - 3600)
        .expect("issue");
    assert!(issuer.verify(&old).is_err(), "an expired token is refused");
    let other = Issuer::new("https://vbc.example", b"another secret of enough length!");
    assert!(
        other.verify(&token).is_err(),
        "a token of another key is refused"
    );
    let elsewhere = Issuer::new("https://other.example", b"a test secret of enough length!!");
    assert!(
        elsewhere.verify(&token).is_err(),
        "a token of another issuer is refused"
    );
}

#[test]
fn each_registration_of_an_id_is_a_new_one() {
    let (a, b) = (registry(), registry());
    let (ca, cb) = (
        a.get("payer-app").expect("a"),
        b.get("payer-app").expect("b"),
    );
    assert!(!ca.registration.is_empty());
    assert_ne!(ca.registration, cb.registration);
    assert!(ca.same_holder(cb));
    let mut narrowed = ca.clone();
    narrowed.scope = "system/Patient.rs".into();
    assert!(ca.same_holder(&narrowed), "a scope change keeps the holder");
    let mut moved = ca.clone();
    moved.role = Role::Manufacturer;
    assert!(!ca.same_holder(&moved));
    let mut rekeyed = ca.clone();
    rekeyed.jwks = None;
    rekeyed.jwks_uri = Some("https://keys.example/jwks".into());
    assert!(!ca.same_holder(&rekeyed));
    // a rebuilt registry keeps the registrations it is given
    let again = Registry::new(a.clients.clone());
    assert_eq!(
        again.get("payer-app").expect("again").registration,
        ca.registration
    );
}

mod access_rules {
    use std::sync::Arc;

    use serde_json::json;

    use crate::auth::access::{Access, Act, Op, Principal};
    use crate::auth::clients::Role;
    use crate::auth::scopes::Scope;
    use crate::engine::parties::ContractParties;
    use crate::engine::Engine;
    use crate::error::FhirError;

    fn caller(role: Role, party: &str, scopes: &str, patient: Option<&str>) -> Access {
        let _ = crate::search::init(None);
        Access::Client(Arc::new(Principal {
            client_id: "c".into(),
            party: party.into(),
            role,
            scopes: scopes.split_whitespace().filter_map(Scope::parse).collect(),
            patient: patient.map(str::to_string),
            engine: Engine::in_memory(Vec::new()),
            request_id: "r".into(),
        }))
    }

    fn forbidden(r: Result<(), FhirError>) -> bool {
        matches!(r, Err(FhirError::Forbidden(_)))
    }

    #[test]
    fn roles_bound_what_scopes_grant() {
        let all = "system/*.*";
        let m = caller(Role::Manufacturer, "Organization/org-merck", all, None);
        assert!(forbidden(m.allow(Act::Read, "Patient")));
        assert!(forbidden(m.allow(Act::Search, "Observation")));
        assert!(forbidden(m.allow(Act::Create, "Measure")));
        assert!(m.allow(Act::Read, "Measure").is_ok());
        let p = caller(Role::Payer, "Organization/org-aetna", all, None);
        assert!(forbidden(p.allow(Act::Create, "Observation")));
        assert!(forbidden(p.allow(Act::Search, "AuditEvent")));
        assert!(
            forbidden(p.allow(Act::Read, "Bundle")),
            "no patient data outside the compartment types"
        );
        assert!(p.allow(Act::Search, "Observation").is_ok());
        let s = caller(Role::Submitter, "Organization/org-lab", all, None);
        assert!(forbidden(s.allow(Act::Create, "Measure")));
        assert!(forbidden(s.allow(Act::Create, "Provenance")));
        assert!(s.allow(Act::Create, "Observation").is_ok());
        let a = caller(Role::Auditor, "Organization/org-audit", all, None);
        assert!(a.allow(Act::Search, "AuditEvent").is_ok());
        assert!(forbidden(a.allow(Act::Read, "Patient")));
        let admin = caller(Role::Admin, "Organization/org-op", all, None);
        assert!(
            forbidden(admin.allow(Act::Create, "AuditEvent")),
            "nobody writes the trail"
        );
        assert!(admin.allow(Act::Delete, "Measure").is_ok());
        assert!(matches!(
            Access::Anonymous.allow(Act::Read, "Patient"),
            Err(FhirError::Unauthorized(_))
        ));
        // operations: the role, then an unrestricted system scope
        assert!(forbidden(m.operation(Op::Outcomes, None)));
        assert!(forbidden(s.operation(Op::LoadContract, None)));
        let narrow = caller(
            Role::Payer,
            "Organization/org-aetna",
            "system/Patient.rs",
            None,
        );
        assert!(forbidden(narrow.operation(Op::EvaluateMeasure, None)));
        // a contract the caller's party is no party of: 404 before any role or scope rule
        let ours = ContractParties {
            payer: "Organization/org-aetna".into(),
            manufacturer: "Organization/org-merck".into(),
        };
        let theirs = ContractParties {
            payer: "Organization/org-harvard-pilgrim".into(),
            manufacturer: "Organization/org-novartis".into(),
        };
        let unknown = |r: Result<(), FhirError>| matches!(r, Err(FhirError::NotFound(_)));
        assert!(unknown(m.operation(Op::Outcomes, Some(("c", &theirs)))));
        assert!(forbidden(m.operation(Op::Outcomes, Some(("c", &ours)))));
        assert!(unknown(
            narrow.operation(Op::EvaluateMeasure, Some(("c", &theirs)))
        ));
        assert!(forbidden(
            narrow.operation(Op::EvaluateMeasure, Some(("c", &ours)))
        ));
        assert!(unknown(
            s.operation(Op::EvaluateMeasure, Some(("c", &ours)))
        ));
        assert!(admin.operation(Op::Outcomes, Some(("c", &theirs))).is_ok());
    }

    #[test]
    fn scope_restrictions_and_patient_context_limit_what_is_seen() {
        let obs = |cat: &str, patient: &str| {
            json!({"resourceType": "Observation", "id": "o", "status": "final",
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": cat}]}],
                "code": {"text": "x"}, "subject": {"reference": format!("Patient/{patient}")}})
        };
        let labs = caller(
            Role::Admin,
            "Organization/org-op",
            "system/Observation.rs?category=laboratory",
            None,
        );
        assert!(labs.sees(Act::Read, "Observation", &obs("laboratory", "p1")));
        assert!(!labs.sees(Act::Read, "Observation", &obs("vital-signs", "p1")));
        assert!(labs.filters(Act::Read, "Observation"));
        let mine = caller(
            Role::Admin,
            "Organization/org-op",
            "patient/Observation.rs",
            Some("p1"),
        );
        assert!(mine.sees(Act::Read, "Observation", &obs("laboratory", "p1")));
        assert!(!mine.sees(Act::Read, "Observation", &obs("laboratory", "p2")));
        let none = caller(
            Role::Admin,
            "Organization/org-op",
            "patient/Observation.rs",
            None,
        );
        assert!(!none.sees(Act::Read, "Observation", &obs("laboratory", "p1")));
        // a submitter sees its own tagged resources only, and its writes are tagged
        let s = caller(
            Role::Submitter,
            "Organization/org-lab",
            "system/*.cruds",
            None,
        );
        let mut o = obs("laboratory", "p1");
        assert!(!s.sees(Act::Read, "Observation", &o));
        s.admit("Observation", &mut o).expect("admit");
        assert!(s.sees(Act::Read, "Observation", &o));
        let other = caller(
            Role::Submitter,
            "Organization/org-ehr",
            "system/*.cruds",
            None,
        );
        assert!(!other.sees(Act::Read, "Observation", &o));
        let mut summary = json!({"resourceType": "MeasureReport", "type": "summary"});
        assert!(matches!(
            s.admit("MeasureReport", &mut summary),
            Err(FhirError::Forbidden(_))
        ));
        // the manufacturer never sees a patient-level report, even of its own contract
        let m = caller(
            Role::Manufacturer,
            "Organization/org-merck",
            "system/*.rs",
            None,
        );
        let ind = json!({"resourceType": "MeasureReport", "type": "individual",
            "measure": "https://vbc-server.dev/fhir/Measure/x"});
        assert!(!m.sees(Act::Read, "MeasureReport", &ind));
    }
}
