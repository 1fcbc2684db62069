//! `Provenance` for what a data submitter wrote in a Bundle: which party and client sent it,
//! when, and which request (its request id and Bundle id) it came in.

use serde_json::{json, Value};

use super::access::Access;
use super::clients::Role;
use crate::clock::{instant, now_ms};

/// The identifier system of request ids (the `X-Request-ID` of the HTTP request).
pub const REQUEST_ID_SYSTEM: &str = "https://vbc-server.dev/fhir/sid/request-id";

/// The identifier system of client ids.
pub const CLIENT_ID_SYSTEM: &str = "https://vbc-server.dev/fhir/sid/client-id";

/// A version a Bundle wrote.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// Resource type.
    pub rtype: &'a str,
    /// Logical id.
    pub id: &'a str,
    /// The version written.
    pub version: u64,
    /// True when the write created the resource.
    pub created: bool,
}

/// The Provenance of a Bundle's writes, when a submitter sent it and it wrote something.
pub fn of_bundle<'w>(
    access: &Access,
    kind: &str,
    bundle_id: Option<&str>,
    written: impl Iterator<Item = Target<'w>>,
) -> Option<Value> {
    let p = access.principal().filter(|p| p.role == Role::Submitter)?;
    let mut all_creates = true;
    let targets: Vec<Value> = written
        .map(|w| {
            all_creates &= w.created;
            json!({"reference": format!("{}/{}/_history/{}", w.rtype, w.id, w.version)})
        })
        .collect();
    if targets.is_empty() {
        return None;
    }
    let what = match bundle_id {
        Some(id) => format!("{kind} Bundle {id}"),
        None => format!("{kind} Bundle"),
    };
    Some(json!({
        "resourceType": "Provenance",
        "target": targets,
        "recorded": instant(now_ms()),
        "activity": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
            "code": if all_creates { "CREATE" } else { "UPDATE" }
        }]},
        "agent": [
            {
                "type": {"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                    "code": "author", "display": "Author"
                }]},
                "who": {"reference": p.party}
            },
            {
                "type": {"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                    "code": "performer", "display": "Performer"
                }]},
                "who": {
                    "identifier": {"system": CLIENT_ID_SYSTEM, "value": p.client_id},
                    "display": format!("client {}", p.client_id)
                },
                "onBehalfOf": {"reference": p.party}
            }
        ],
        "entity": [{
            "role": "source",
            "what": {
                "identifier": {"system": REQUEST_ID_SYSTEM, "value": p.request_id},
                "display": what
            }
        }]
    }))
}
