//! Who is asking and what they may do: the caller of a request ([`Access`]) and the rules that
//! decide, per interaction, by SMART scope (v1/v2, `?param=value` restrictions, `patient/`
//! compartments) and by the role of the caller's party (submitter, payer, manufacturer, admin,
//! auditor).
//!
//! Two kinds of decision: [`Access::allow`] says whether the caller may do an interaction on a
//! resource type at all (403 otherwise: that reveals nothing about any resource), and
//! [`Access::sees`] whether one resource is the caller's to see (reads answer 404 and searches
//! leave it out otherwise, so no party learns whether another party's resource exists).

use std::sync::Arc;

use serde_json::Value;

use std::borrow::Cow;

use super::clients::Role;
use super::scopes::Scope;
use crate::engine::Engine;
use crate::error::{FhirError, Result};
use crate::search::matcher::Matcher;
use crate::store::IndexEntry;

/// The tag system that records which party submitted a resource (code: `Organization/[id]`).
pub const SUBMITTER_SYSTEM: &str = "https://vbc-server.dev/fhir/CodeSystem/submitter";

/// Types that define contracts or hold reports: never written by data submitters.
const CONTRACT_TYPES: &[&str] = &["Measure", "Library", "ValueSet", "Group", "MeasureReport"];

/// Types only the server or an administrator writes.
const SERVER_TYPES: &[&str] = &[
    "AuditEvent",
    "Provenance",
    "CodeSystem",
    "ConceptMap",
    "NamingSystem",
    "StructureDefinition",
    "SearchParameter",
    "OperationDefinition",
    "CapabilityStatement",
    "CompartmentDefinition",
    "ImplementationGuide",
    "Subscription",
];

/// Types a manufacturer may read (with the per-resource rules of [`Access::sees`]).
const MANUFACTURER_TYPES: &[&str] = &[
    "Measure",
    "Library",
    "ValueSet",
    "CodeSystem",
    "MeasureReport",
    "Organization",
];

/// Types a payer reads without a patient or contract to own them (who prescribed, dispensed,
/// what was dispensed).
const PAYER_SHARED_TYPES: &[&str] = &[
    "Organization",
    "Practitioner",
    "PractitionerRole",
    "Location",
    "Medication",
    "Substance",
    "HealthcareService",
    "CodeSystem",
];

/// Whether a type is about a patient (the Patient, or a type of its compartment).
fn patient_level(rtype: &str) -> bool {
    rtype == "Patient"
        || crate::search::engine().is_ok_and(|e| !e.registry.compartment_params(rtype).is_empty())
}

/// An interaction on resources, as SMART v2 permissions name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// create (`c`)
    Create,
    /// read, vread, instance history (`r`)
    Read,
    /// update, patch (`u`)
    Update,
    /// delete (`d`)
    Delete,
    /// search, type and system history (`s`)
    Search,
}

impl Act {
    /// The SMART v2 permission letter.
    pub fn perm(self) -> char {
        match self {
            Act::Create => 'c',
            Act::Read => 'r',
            Act::Update => 'u',
            Act::Delete => 'd',
            Act::Search => 's',
        }
    }
    fn writes(self) -> bool {
        matches!(self, Act::Create | Act::Update | Act::Delete)
    }
}

/// The operations with their own access rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `$evaluate-measure` with the report type asked for.
    EvaluateMeasure,
    /// `$data-requirements`.
    DataRequirements,
    /// `$collect-data`.
    CollectData,
    /// `$care-gaps`.
    CareGaps,
    /// `$outcomes` (per-patient results).
    Outcomes,
    /// `$submit-data`.
    SubmitData,
    /// `$publish-reports`.
    PublishReports,
    /// `$load-contract`.
    LoadContract,
    /// `$validate` (reads and writes nothing).
    Validate,
    /// Audit chain verification.
    VerifyAudit,
    /// Client registration.
    ManageClients,
}

/// An authenticated client, for the length of one request.
pub struct Principal {
    /// The client id.
    pub client_id: String,
    /// Its party (`Organization/[id]`).
    pub party: String,
    /// The party's role.
    pub role: Role,
    /// The granted scopes.
    pub scopes: Vec<Scope>,
    /// The patient of `patient/` scopes (from the token), if any.
    pub patient: Option<String>,
    /// Contracts and memberships (to tell whose a resource is).
    pub engine: Arc<Engine>,
    /// The request id (for Provenance and the audit trail).
    pub request_id: String,
}

/// Who a request comes from.
#[derive(Clone)]
pub enum Access {
    /// The server itself (schedules, contract loading) and `--no-auth` mode: everything.
    System,
    /// No credentials: nothing beyond the open endpoints.
    Anonymous,
    /// An authenticated client.
    Client(Arc<Principal>),
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Access::System => write!(f, "System"),
            Access::Anonymous => write!(f, "Anonymous"),
            Access::Client(p) => write!(f, "Client({}, {:?})", p.client_id, p.role),
        }
    }
}

fn role_allows(role: Role, act: Act, rtype: &str) -> bool {
    if rtype == "AuditEvent" && act.writes() {
        return false; // the server alone writes the audit trail
    }
    match role {
        Role::Admin => true,
        Role::Auditor => !act.writes() && matches!(rtype, "AuditEvent" | "Provenance"),
        // data-collection MeasureReports ($submit-data) are data too; see `Access::admit`
        Role::Submitter => {
            (rtype == "MeasureReport" || !CONTRACT_TYPES.contains(&rtype))
                && !SERVER_TYPES.contains(&rtype)
        }
        Role::Payer => {
            !act.writes()
                && !matches!(rtype, "AuditEvent" | "Provenance")
                && (CONTRACT_TYPES.contains(&rtype)
                    || PAYER_SHARED_TYPES.contains(&rtype)
                    || patient_level(rtype))
        }
        Role::Manufacturer => !act.writes() && MANUFACTURER_TYPES.contains(&rtype),
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Submitter => "a data submitter",
        Role::Payer => "a payer",
        Role::Manufacturer => "a manufacturer",
        Role::Admin => "an administrator",
        Role::Auditor => "an auditor",
    }
}

fn act_name(act: Act) -> &'static str {
    match act {
        Act::Create => "create",
        Act::Read => "read",
        Act::Update => "update",
        Act::Delete => "delete",
        Act::Search => "search",
    }
}

/// What an access decision looks at: the resource itself, or its stored search index entries
/// (enough for the scope rules and the compartment and submitter rules, and far cheaper than
/// loading and parsing the resource: a payer's count over many matches loads none).
#[derive(Clone, Copy)]
enum Seen<'a> {
    /// The resource.
    Resource(&'a Value),
    /// The id and the index entries of a stored resource.
    Indexed {
        id: &'a str,
        entries: &'a [IndexEntry],
    },
}

impl Seen<'_> {
    fn id(&self) -> Option<&str> {
        match self {
            Seen::Resource(r) => r.get("id").and_then(Value::as_str),
            Seen::Indexed { id, .. } => Some(*id),
        }
    }

    /// Index entries including those of `params` (callers match on the parameter name).
    fn entries(&self, rtype: &str, params: &[String]) -> Cow<'_, [IndexEntry]> {
        match self {
            Seen::Resource(r) => Cow::Owned(
                crate::search::engine()
                    .map(|e| e.entries_of_params(rtype, r, params))
                    .unwrap_or_default(),
            ),
            Seen::Indexed { entries, .. } => Cow::Borrowed(entries),
        }
    }
}

/// The patients a resource is about: itself for a Patient, else the references of its Patient
/// compartment parameters.
fn patients_of(rtype: &str, seen: Seen) -> Vec<String> {
    if rtype == "Patient" {
        return seen.id().map(|id| vec![id.to_string()]).unwrap_or_default();
    }
    let Ok(engine) = crate::search::engine() else {
        return Vec::new();
    };
    let params = engine.registry.compartment_params(rtype);
    seen.entries(rtype, params)
        .iter()
        .filter(|e| params.contains(&e.param))
        .filter_map(|e| std::str::from_utf8(&e.value).ok())
        .filter_map(|v| v.strip_prefix("Patient/"))
        .map(str::to_string)
        .collect()
}

/// Whether a resource satisfies a `param=value[&param=value]` scope restriction (token
/// parameters; a comma means any of the values).
fn restriction_holds(restriction: &str, rtype: &str, seen: Seen) -> bool {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(restriction.as_bytes())
        .into_owned()
        .collect();
    let params: Vec<String> = pairs.iter().map(|(k, _)| k.clone()).collect();
    let entries = seen.entries(rtype, &params);
    pairs.iter().all(|(param, values)| {
        values.split(',').any(|v| {
            let m = Matcher::token(param, v);
            entries.iter().any(|e| m.accepts(&e.param, &e.value))
        })
    })
}

/// Whether a resource carries the submitter tag of `party`.
fn submitted_by(seen: Seen, party: &str) -> bool {
    match seen {
        Seen::Resource(resource) => resource
            .pointer("/meta/tag")
            .and_then(Value::as_array)
            .is_some_and(|tags| {
                tags.iter().any(|t| {
                    t.get("system").and_then(Value::as_str) == Some(SUBMITTER_SYSTEM)
                        && t.get("code").and_then(Value::as_str) == Some(party)
                })
            }),
        Seen::Indexed { entries, .. } => {
            let m = Matcher::token("_tag", &format!("{SUBMITTER_SYSTEM}|{party}"));
            entries.iter().any(|e| m.accepts(&e.param, &e.value))
        }
    }
}

impl Principal {
    /// The scopes that grant `act` on `rtype`.
    fn granting<'a>(&'a self, act: Act, rtype: &'a str) -> impl Iterator<Item = &'a Scope> + 'a {
        self.scopes
            .iter()
            .filter(move |s| s.permits(rtype, act.perm()))
    }

    fn scope_sees(&self, act: Act, rtype: &str, seen: Seen) -> bool {
        self.granting(act, rtype).any(|s| {
            let in_context = match s.context.as_str() {
                "patient" => self
                    .patient
                    .as_deref()
                    .is_some_and(|p| patients_of(rtype, seen).iter().any(|x| x == p)),
                _ => true,
            };
            in_context
                && s.restriction
                    .as_deref()
                    .is_none_or(|r| restriction_holds(r, rtype, seen))
        })
    }

    /// The party's rules; None when they need the resource and `seen` holds index entries only
    /// (contract resources and reports, whose contract is found from their content).
    fn role_sees(&self, rtype: &str, seen: Seen) -> Option<bool> {
        let resource = match seen {
            Seen::Resource(r) => Some(r),
            Seen::Indexed { .. } => None,
        };
        let parties = |r: &Value| self.engine.contract_parties(rtype, r);
        Some(match self.role {
            Role::Admin | Role::Auditor => true,
            Role::Submitter => submitted_by(seen, &self.party),
            Role::Payer => {
                let members = || {
                    patients_of(rtype, seen)
                        .iter()
                        .any(|p| self.engine.is_member(&self.party, p))
                };
                if CONTRACT_TYPES.contains(&rtype) {
                    let resource = resource?;
                    let mine = match parties(resource) {
                        Some(p) => p.payer == self.party,
                        // not a contract's: definitions are shared, reports are not
                        None => !matches!(rtype, "MeasureReport" | "Group"),
                    };
                    // a report about one patient: a member's only
                    let about_patient = rtype == "MeasureReport"
                        && resource
                            .pointer("/subject/reference")
                            .and_then(Value::as_str)
                            .is_some_and(|r| r.starts_with("Patient/"));
                    return Some(mine && (!about_patient || members()));
                }
                !patient_level(rtype) || members()
            }
            Role::Manufacturer => match rtype {
                "MeasureReport" => {
                    let resource = resource?;
                    resource.get("type").and_then(Value::as_str) == Some("summary")
                        && parties(resource).is_some_and(|p| p.manufacturer == self.party)
                }
                "Measure" | "Library" => {
                    parties(resource?).is_some_and(|p| p.manufacturer == self.party)
                }
                "ValueSet" => parties(resource?).is_none_or(|p| p.manufacturer == self.party),
                _ => MANUFACTURER_TYPES.contains(&rtype),
            },
        })
    }
}

/// Tag a resource as written by the principal's party (replacing any submitter tag sent).
fn stamp(p: &Principal, resource: &mut Value) {
    let Some(obj) = resource.as_object_mut() else {
        return;
    };
    let meta = obj
        .entry("meta")
        .or_insert_with(|| Value::Object(Default::default()));
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    let tags = meta
        .entry("tag")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(list) = tags {
        list.retain(|t| t.get("system").and_then(Value::as_str) != Some(SUBMITTER_SYSTEM));
        list.push(serde_json::json!({
            "system": SUBMITTER_SYSTEM,
            "code": p.party,
            "display": format!("submitted by {} ({})", p.party, p.client_id)
        }));
    }
}

impl Access {
    /// Whether this caller may do `act` on `rtype` at all: 401 without credentials, 403 when
    /// neither scope nor role allows it.
    pub fn allow(&self, act: Act, rtype: &str) -> Result<()> {
        if rtype == "AuditEvent" && act.writes() && !matches!(self, Access::Anonymous) {
            return Err(FhirError::Forbidden(
                "the audit trail is written by the server alone".into(),
            ));
        }
        match self {
            Access::System => Ok(()),
            Access::Anonymous => Err(FhirError::Unauthorized(
                "this request needs a bearer token".into(),
            )),
            Access::Client(p) => {
                if !role_allows(p.role, act, rtype) {
                    return Err(FhirError::Forbidden(format!(
                        "{} ({}) may not {} {rtype}",
                        role_name(p.role),
                        p.client_id,
                        act_name(act)
                    )));
                }
                if p.granting(act, rtype).next().is_none() {
                    return Err(FhirError::Forbidden(format!(
                        "no granted scope allows {} on {rtype} (needs '{}')",
                        act_name(act),
                        act.perm()
                    )));
                }
                Ok(())
            }
        }
    }

    /// Whether the caller may see (or, for writes, touch) this resource: its scopes'
    /// restrictions and compartment, and its party's rules.
    pub fn sees(&self, act: Act, rtype: &str, resource: &Value) -> bool {
        self.judge(act, rtype, Seen::Resource(resource))
            .unwrap_or(false)
    }

    /// [`Access::sees`] judged from a stored resource's search index entries alone (its
    /// compartment references, scope restriction tokens and submitter tag), without loading
    /// it; None when a rule needs the resource itself (contract resources and reports), for
    /// [`Access::sees`] to decide.
    pub fn sees_indexed(
        &self,
        act: Act,
        rtype: &str,
        id: &str,
        entries: &[IndexEntry],
    ) -> Option<bool> {
        self.judge(act, rtype, Seen::Indexed { id, entries })
    }

    fn judge(&self, act: Act, rtype: &str, seen: Seen) -> Option<bool> {
        match self {
            Access::System => Some(true),
            Access::Anonymous => Some(false),
            Access::Client(p) => {
                if !role_allows(p.role, act, rtype) || !p.scope_sees(act, rtype, seen) {
                    return Some(false);
                }
                p.role_sees(rtype, seen)
            }
        }
    }

    /// True when [`Access::sees`] can say no for a resource `allow` admitted (searches then
    /// filter their matches).
    pub fn filters(&self, act: Act, rtype: &str) -> bool {
        match self {
            Access::System => false,
            Access::Anonymous => true,
            Access::Client(p) => {
                let unrestricted = p
                    .granting(act, rtype)
                    .any(|s| s.context != "patient" && s.restriction.is_none());
                !(unrestricted && matches!(p.role, Role::Admin | Role::Auditor))
            }
        }
    }

    /// Search parameters that narrow a search to what the caller may see (a submitter's own
    /// resources); [`Access::sees`] still filters the rest.
    pub fn narrowing(&self, rtype: &str) -> Vec<(String, String)> {
        match self {
            Access::Client(p) if p.role == Role::Submitter && rtype != "*" => {
                vec![("_tag".into(), format!("{SUBMITTER_SYSTEM}|{}", p.party))]
            }
            _ => Vec::new(),
        }
    }

    /// Check what a caller writes and mark a submitter's resources as theirs (any submitter
    /// tag the client sent is replaced). A submitter's MeasureReports can only be
    /// data-collection reports.
    pub fn admit(&self, rtype: &str, resource: &mut Value) -> Result<()> {
        let Access::Client(p) = self else {
            return Ok(());
        };
        if p.role != Role::Submitter {
            return Ok(());
        }
        if rtype == "MeasureReport"
            && resource.get("type").and_then(Value::as_str) != Some("data-collection")
        {
            return Err(FhirError::Forbidden(format!(
                "a data submitter ({}) may only submit data-collection MeasureReports",
                p.client_id
            )));
        }
        stamp(p, resource);
        Ok(())
    }

    /// Whether the caller may run an operation, for the contract it concerns (when known: the
    /// Measure id asked for and the contract's parties). Ownership is checked first: a contract
    /// the caller's party is not a party of answers 404 exactly as an unknown one does
    /// ([`unknown_contract`]), before any role or scope rule could tell that it exists.
    pub fn operation(
        &self,
        op: Op,
        contract: Option<(&str, &crate::engine::parties::ContractParties)>,
    ) -> Result<()> {
        let p = match self {
            Access::System => return Ok(()),
            Access::Anonymous => {
                return Err(FhirError::Unauthorized(
                    "this request needs a bearer token".into(),
                ))
            }
            Access::Client(p) => p,
        };
        if let Some((measure_id, c)) = contract {
            let party_of_it = match p.role {
                Role::Admin => true,
                Role::Payer => c.payer == p.party,
                Role::Manufacturer => c.manufacturer == p.party,
                // data submitters and auditors are no party of any contract
                Role::Submitter | Role::Auditor => false,
            };
            if !party_of_it {
                return Err(unknown_contract(measure_id));
            }
        }
        let forbidden = || {
            Err(FhirError::Forbidden(format!(
                "{} ({}) may not run {}",
                role_name(p.role),
                p.client_id,
                op_name(op)
            )))
        };
        let roles: &[Role] = match op {
            Op::EvaluateMeasure | Op::DataRequirements => {
                &[Role::Admin, Role::Payer, Role::Manufacturer]
            }
            Op::CollectData | Op::CareGaps | Op::Outcomes | Op::PublishReports => {
                &[Role::Admin, Role::Payer]
            }
            Op::SubmitData => &[Role::Admin, Role::Submitter],
            Op::LoadContract | Op::ManageClients => &[Role::Admin],
            Op::VerifyAudit => &[Role::Admin, Role::Auditor],
            Op::Validate => &[
                Role::Admin,
                Role::Payer,
                Role::Manufacturer,
                Role::Submitter,
                Role::Auditor,
            ],
        };
        if !roles.contains(&p.role) {
            return forbidden();
        }
        // the scope the operation's output needs
        let (act, rtype) = match op {
            Op::DataRequirements => (Act::Read, "Measure"),
            Op::SubmitData | Op::PublishReports => (Act::Create, "MeasureReport"),
            Op::LoadContract => (Act::Create, "Library"),
            Op::VerifyAudit => (Act::Read, "AuditEvent"),
            Op::Validate | Op::ManageClients => return Ok(()),
            _ => (Act::Read, "MeasureReport"),
        };
        // operations reach across patients: a patient/ or restricted scope is not enough
        if !p
            .granting(act, rtype)
            .any(|s| s.context != "patient" && s.restriction.is_none())
        {
            return Err(FhirError::Forbidden(format!(
                "{} needs an unrestricted system scope granting '{}' on {rtype}",
                op_name(op),
                act.perm()
            )));
        }
        Ok(())
    }

    /// The authenticated client, if any.
    pub fn principal(&self) -> Option<&Principal> {
        match self {
            Access::Client(p) => Some(p),
            _ => None,
        }
    }

    /// True for a manufacturer (who sees only population-level reports).
    pub fn is_manufacturer(&self) -> bool {
        matches!(self, Access::Client(p) if p.role == Role::Manufacturer)
    }
}

/// The 404 of an operation on a Measure that is no loaded contract or outcome Measure, or one of
/// a contract the caller is no party of: the same answer for both.
pub fn unknown_contract(measure_id: &str) -> FhirError {
    FhirError::NotFound(format!(
        "Measure/{measure_id} is not a loaded contract or outcome Measure"
    ))
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::EvaluateMeasure => "$evaluate-measure",
        Op::DataRequirements => "$data-requirements",
        Op::CollectData => "$collect-data",
        Op::CareGaps => "$care-gaps",
        Op::Outcomes => "$outcomes",
        Op::SubmitData => "$submit-data",
        Op::PublishReports => "$publish-reports",
        Op::LoadContract => "$load-contract",
        Op::Validate => "$validate",
        Op::VerifyAudit => "audit verification",
        Op::ManageClients => "client registration",
    }
}
