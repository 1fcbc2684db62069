//! Create, update, patch and delete (plain and conditional) as steps a write job runs on the
//! store's writer, so that checks (versions, conditional matches) and writes are atomic.

use std::sync::Arc;

use serde_json::Value;

use super::{stamp, Services};
use crate::auth::access::{Access, Act};
use crate::error::{FhirError, Result};
use crate::fhir::outcome::Issue;
use crate::fhir::references::check_id;
use crate::fhir::validate::{Context, Validator};
use crate::search::{self, Criterion};
use crate::store::{self, Current, IndexEntry, Method, StagedWrite, WriteTxn};

/// The result of a write interaction.
#[derive(Debug, Clone)]
pub struct Written {
    /// Resource type.
    pub rtype: String,
    /// Logical id.
    pub id: String,
    /// Version now current (None when a delete found nothing to delete).
    pub version: Option<u64>,
    /// Timestamp of that version (ms since epoch).
    pub last_updated_ms: i64,
    /// The resource as stored (None for deletes).
    pub resource: Option<Value>,
    /// HTTP status: 201 created, 200 updated/matched, 204 deleted.
    pub status: u16,
}

impl Written {
    /// The version written, as a Provenance names it (None when nothing was written).
    pub fn target(&self) -> Option<crate::auth::provenance::Target<'_>> {
        Some(crate::auth::provenance::Target {
            rtype: &self.rtype,
            id: &self.id,
            version: self.version?,
            created: self.status == 201,
        })
    }
}

/// Validate a resource for writing as `rtype`; errors carry every problem.
pub fn check_resource(
    validator: &Validator,
    rtype: &str,
    resource: &Value,
    ctx: Context<'_>,
) -> Result<Vec<Issue>> {
    let actual = resource["resourceType"].as_str().unwrap_or("");
    if actual != rtype {
        return Err(FhirError::BadRequest(format!(
            "resourceType '{actual}' does not match the type '{rtype}' in the URL"
        )));
    }
    let issues = validator.validate(resource, ctx);
    if issues.iter().any(Issue::is_error) {
        return Err(FhirError::Invalid(issues));
    }
    Ok(issues)
}

/// Search parameters whose values the writer sets when it stamps a version (`id` and
/// `meta.lastUpdated`): entries extracted before submission lack them, and the writer adds them.
const STAMPED_PARAMS: [&str; 2] = ["_id", "_lastUpdated"];

/// The search-index entries of a resource about to be written, extracted before it is submitted
/// (off the store's single writer, so that extraction runs on every core): all but those of the
/// parameters the writer stamps (see [`stage`]).
pub fn extract_index(rtype: &str, resource: &Value) -> Result<Vec<IndexEntry>> {
    let mut entries = search::engine()?.index_entries(rtype, resource);
    entries.retain(|e| !STAMPED_PARAMS.contains(&e.param.as_str()));
    Ok(entries)
}

/// Validate a resource and extract its index entries on a blocking thread (both are CPU work
/// that should neither hold an async worker nor the store's writer).
pub async fn prepare(
    validator: Arc<Validator>,
    rtype: &str,
    resource: Value,
) -> Result<(Value, Vec<IndexEntry>)> {
    let rtype = rtype.to_string();
    tokio::task::spawn_blocking(move || {
        check_resource(&validator, &rtype, &resource, Context::default())?;
        let index = extract_index(&rtype, &resource)?;
        Ok((resource, index))
    })
    .await
    .map_err(|e| FhirError::Storage(format!("resource preparation failed: {e}")))?
}

/// Stamp a new version and stage it. `index` holds the entries [`extract_index`] gave for this
/// content before submission (None: extract them here, for content only the writer knows, such
/// as a patched resource).
fn stage(
    txn: &mut dyn WriteTxn,
    rtype: &str,
    id: &str,
    version: u64,
    method: Method,
    mut resource: Value,
    index: Option<Vec<IndexEntry>>,
) -> Result<Written> {
    let now = txn.now_ms();
    stamp(&mut resource, id, version, now);
    let bytes = serde_json::to_vec(&resource).map_err(|e| FhirError::Storage(e.to_string()))?;
    let engine = search::engine()?;
    let index = match index {
        Some(mut entries) => {
            let stamped: Vec<String> = STAMPED_PARAMS.iter().map(|p| p.to_string()).collect();
            entries.extend(engine.entries_of_params(rtype, &resource, &stamped));
            entries
        }
        None => engine.index_entries(rtype, &resource),
    };
    txn.put(StagedWrite {
        rtype: rtype.to_string(),
        id: id.to_string(),
        version,
        method,
        index,
        resource: Some(bytes),
    })?;
    Ok(Written {
        rtype: rtype.to_string(),
        id: id.to_string(),
        version: Some(version),
        last_updated_ms: now,
        resource: Some(resource),
        status: if method == Method::Create { 201 } else { 200 },
    })
}

/// Ids of live `rtype` resources matching `criteria`, as the writer sees them.
pub fn find(txn: &mut dyn WriteTxn, rtype: &str, criteria: &[Criterion]) -> Result<Vec<String>> {
    search::engine()?.find_in_txn(txn, rtype, criteria)
}

/// Parse conditional criteria (`If-None-Exist`, conditional update/delete, conditional
/// references): unknown parameters are errors here, since ignoring one would change the match.
pub fn parse_criteria(rtype: &str, query: &str) -> Result<Vec<Criterion>> {
    Ok(search::engine()?.parse_conditional(rtype, query)?.criteria)
}

/// The current version of a resource as the result of an interaction (a read, or a conditional
/// create that matched).
pub fn current_as_written(rtype: &str, id: &str, cur: Current, status: u16) -> Result<Written> {
    let resource = match &cur.resource {
        Some(b) => Some(
            crate::fhir::number_text::parse(b).map_err(|e| FhirError::Storage(e.to_string()))?,
        ),
        None => None,
    };
    Ok(Written {
        rtype: rtype.to_string(),
        id: id.to_string(),
        version: Some(cur.version),
        last_updated_ms: cur.last_updated_ms,
        resource,
        status,
    })
}

fn existing(txn: &mut dyn WriteTxn, rtype: &str, id: &str, status: u16) -> Result<Written> {
    let cur = txn
        .current(rtype, id)?
        .ok_or_else(|| FhirError::Storage("matched resource vanished".into()))?;
    current_as_written(rtype, id, cur, status)
}

/// A delete that found nothing to delete (204, no new version).
pub fn nothing_deleted(txn: &dyn WriteTxn, rtype: &str, id: &str) -> Written {
    Written {
        rtype: rtype.to_string(),
        id: id.to_string(),
        version: None,
        last_updated_ms: txn.now_ms(),
        resource: None,
        status: 204,
    }
}

/// Create with a new id (or `id` when the caller already assigned one), unless `if_none_exist`
/// matches: one match returns it (200), several fail (412). `index`: the entries
/// [`extract_index`] gave before submission, if it ran.
pub fn create_in(
    txn: &mut dyn WriteTxn,
    rtype: &str,
    resource: Value,
    id: Option<String>,
    if_none_exist: Option<&[Criterion]>,
    index: Option<Vec<IndexEntry>>,
) -> Result<Written> {
    if let Some(criteria) = if_none_exist {
        let found = find(txn, rtype, criteria)?;
        match found.as_slice() {
            [] => {}
            [one] => return existing(txn, rtype, one, 200),
            many => {
                return Err(FhirError::PreconditionFailed(format!(
                    "conditional create matched {} {rtype} resources",
                    many.len()
                )))
            }
        }
    }
    let id = id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let version = match txn.current(rtype, &id)? {
        Some(c) if c.deleted => c.version + 1,
        Some(_) => return Err(FhirError::Conflict(format!("{rtype}/{id} already exists"))),
        None => 1,
    };
    stage(txn, rtype, &id, version, Method::Create, resource, index)
}

/// The JSON of a live current version (None when absent or deleted).
pub(crate) fn live_doc(cur: Option<&Current>) -> Result<Option<Value>> {
    match cur
        .filter(|c| !c.deleted)
        .and_then(|c| c.resource.as_deref())
    {
        Some(bytes) => crate::fhir::number_text::parse(bytes)
            .map(Some)
            .map_err(|e| FhirError::Storage(e.to_string())),
        None => Ok(None),
    }
}

/// The live document of a resource that is part of a loaded contract version or a published
/// report (tagged `contract-content|immutable`); None for anything else.
fn immutable_doc(rtype: &str, cur: Option<&Current>) -> Result<Option<Value>> {
    if !matches!(rtype, "Measure" | "Library" | "ValueSet" | "MeasureReport") {
        return Ok(None);
    }
    let Some(doc) = live_doc(cur)? else {
        return Ok(None);
    };
    let tagged = doc["meta"]["tag"].as_array().is_some_and(|tags| {
        tags.iter().any(|t| {
            t["system"].as_str() == Some(crate::contracts::fhir::CONTRACT_CONTENT_SYSTEM)
                && t["code"].as_str() == Some("immutable")
        })
    });
    Ok(tagged.then_some(doc))
}

/// A resource's content for comparing an update with what is stored: without the server-assigned
/// `meta.versionId`, `meta.lastUpdated` and contract-content tags (a client that reads a resource
/// and sends it back unchanged sends the same content).
fn content(doc: &Value) -> Value {
    let mut c = doc.clone();
    if let Some(meta) = c.get_mut("meta").and_then(Value::as_object_mut) {
        meta.remove("versionId");
        meta.remove("lastUpdated");
        if let Some(tags) = meta.get_mut("tag").and_then(Value::as_array_mut) {
            tags.retain(|t| {
                t["system"].as_str() != Some(crate::contracts::fhir::CONTRACT_CONTENT_SYSTEM)
            });
            if tags.is_empty() {
                meta.remove("tag");
            }
        }
        if meta.is_empty() {
            c.as_object_mut().map(|o| o.remove("meta"));
        }
    }
    c
}

/// Refuse to change a resource that is part of a loaded contract version or a published report:
/// a loaded version never changes.
fn refuse_if_immutable(rtype: &str, id: &str, cur: Option<&Current>) -> Result<()> {
    if immutable_doc(rtype, cur)?.is_some() {
        let why = if rtype == "MeasureReport" {
            "is a published report, which never changes; publish the period again to issue a correction"
        } else {
            "is part of a loaded contract version, which never changes; load the changed contract under a new version"
        };
        return Err(FhirError::Conflict(format!("{rtype}/{id} {why}")));
    }
    Ok(())
}

/// Refuse (as 404, revealing nothing) to change a live resource the caller may not see, such as
/// another submitter's.
fn guard_existing(
    access: &Access,
    act: Act,
    rtype: &str,
    id: &str,
    cur: Option<&Current>,
) -> Result<()> {
    if !access.filters(act, rtype) {
        return Ok(());
    }
    let Some(doc) = live_doc(cur)? else {
        return Ok(());
    };
    if access.sees(act, rtype, &doc) {
        Ok(())
    } else {
        Err(FhirError::NotFound(format!("{rtype}/{id} is not known")))
    }
}

/// Update (or create with the client's id). `if_match` demands the current version; `index` as
/// for [`create_in`].
pub fn update_in(
    txn: &mut dyn WriteTxn,
    access: &Access,
    rtype: &str,
    id: &str,
    resource: Value,
    if_match: Option<u64>,
    index: Option<Vec<IndexEntry>>,
) -> Result<Written> {
    let cur = txn.current(rtype, id)?;
    guard_existing(access, Act::Update, rtype, id, cur.as_ref())?;
    if let (Some(doc), Some(c)) = (immutable_doc(rtype, cur.as_ref())?, &cur) {
        // an immutable resource sent back with the same content: nothing to change, no new version
        if content(&doc) == content(&resource) && if_match.is_none_or(|v| v == c.version) {
            return current_as_written(rtype, id, c.clone(), 200);
        }
    }
    refuse_if_immutable(rtype, id, cur.as_ref())?;
    if let Some(want) = if_match {
        let have = cur.as_ref().filter(|c| !c.deleted).map(|c| c.version);
        if have != Some(want) {
            return Err(FhirError::PreconditionFailed(format!(
                "If-Match version {want} does not match the current version of {rtype}/{id} ({})",
                have.map_or("none".to_string(), |v| v.to_string())
            )));
        }
    }
    match cur {
        Some(c) if !c.deleted => stage(
            txn,
            rtype,
            id,
            c.version + 1,
            Method::Update,
            resource,
            index,
        ),
        Some(c) => {
            let mut w = stage(
                txn,
                rtype,
                id,
                c.version + 1,
                Method::Update,
                resource,
                index,
            )?;
            w.status = 201;
            Ok(w)
        }
        None => {
            let mut w = stage(txn, rtype, id, 1, Method::Update, resource, index)?;
            w.status = 201;
            Ok(w)
        }
    }
}

/// Conditional update (`PUT [type]?criteria`); `index` as for [`create_in`].
pub fn conditional_update_in(
    txn: &mut dyn WriteTxn,
    access: &Access,
    rtype: &str,
    criteria: &[Criterion],
    resource: Value,
    index: Option<Vec<IndexEntry>>,
) -> Result<Written> {
    let body_id = resource["id"].as_str().map(String::from);
    let found = find(txn, rtype, criteria)?;
    match found.as_slice() {
        [] => match body_id {
            Some(id) => update_in(txn, access, rtype, &id, resource, None, index),
            None => create_in(txn, rtype, resource, None, None, index),
        },
        [one] => {
            if body_id.as_deref().is_some_and(|b| b != one) {
                return Err(FhirError::BadRequest(format!(
                    "the resource id does not match the matched resource {rtype}/{one}"
                )));
            }
            let one = one.clone();
            update_in(txn, access, rtype, &one, resource, None, index)
        }
        many => Err(FhirError::PreconditionFailed(format!(
            "conditional update matched {} {rtype} resources",
            many.len()
        ))),
    }
}

/// Delete (a versioned tombstone). Deleting what does not exist (or is gone) succeeds with no write.
pub fn delete_in(
    txn: &mut dyn WriteTxn,
    access: &Access,
    rtype: &str,
    id: &str,
    if_match: Option<u64>,
) -> Result<Written> {
    let cur = txn.current(rtype, id)?;
    if let Err(FhirError::NotFound(_)) =
        guard_existing(access, Act::Delete, rtype, id, cur.as_ref())
    {
        // another party's resource: as if there were nothing to delete
        return Ok(nothing_deleted(txn, rtype, id));
    }
    refuse_if_immutable(rtype, id, cur.as_ref())?;
    if let Some(want) = if_match {
        if cur.as_ref().filter(|c| !c.deleted).map(|c| c.version) != Some(want) {
            return Err(FhirError::PreconditionFailed(format!(
                "If-Match version {want} does not match the current version of {rtype}/{id}"
            )));
        }
    }
    let mut w = nothing_deleted(txn, rtype, id);
    if let Some(c) = cur.filter(|c| !c.deleted) {
        txn.put(StagedWrite {
            rtype: rtype.to_string(),
            id: id.to_string(),
            version: c.version + 1,
            method: Method::Delete,
            resource: None,
            index: Vec::new(),
        })?;
        w.version = Some(c.version + 1);
    }
    Ok(w)
}

/// Conditional delete (`DELETE [type]?criteria`): one match at most.
pub fn conditional_delete_in(
    txn: &mut dyn WriteTxn,
    access: &Access,
    rtype: &str,
    criteria: &[Criterion],
) -> Result<Written> {
    let found = find(txn, rtype, criteria)?;
    match found.as_slice() {
        [] => Ok(nothing_deleted(txn, rtype, "")),
        [one] => {
            let one = one.clone();
            delete_in(txn, access, rtype, &one, None)
        }
        many => Err(FhirError::PreconditionFailed(format!(
            "conditional delete matched {} {rtype} resources; only single deletes are supported",
            many.len()
        ))),
    }
}

/// Apply a JSON Patch to the current version, validate the result and store it.
pub fn patch_in(
    txn: &mut dyn WriteTxn,
    access: &Access,
    validator: &Validator,
    rtype: &str,
    id: &str,
    patch: &json_patch::Patch,
    if_match: Option<u64>,
) -> Result<Written> {
    let cur = match txn.current(rtype, id)? {
        None => return Err(FhirError::NotFound(format!("{rtype}/{id} is not known"))),
        Some(c) if c.deleted => return Err(FhirError::Gone(format!("{rtype}/{id} was deleted"))),
        Some(c) => c,
    };
    guard_existing(access, Act::Update, rtype, id, Some(&cur))?;
    refuse_if_immutable(rtype, id, Some(&cur))?;
    if let Some(want) = if_match {
        if cur.version != want {
            return Err(FhirError::PreconditionFailed(format!(
                "If-Match version {want} does not match the current version {} of {rtype}/{id}",
                cur.version
            )));
        }
    }
    let bytes = cur.resource.as_deref().unwrap_or_default();
    let mut doc: Value =
        crate::fhir::number_text::parse(bytes).map_err(|e| FhirError::Storage(e.to_string()))?;
    json_patch::patch(&mut doc, patch)
        .map_err(|e| FhirError::BadRequest(format!("JSON Patch failed: {e}")))?;
    access.admit(rtype, &mut doc)?;
    if access.filters(Act::Update, rtype) && !access.sees(Act::Update, rtype, &doc) {
        return Err(FhirError::Forbidden(format!(
            "the patched {rtype} lies outside what the client's scopes allow it to write"
        )));
    }
    if doc["resourceType"].as_str() != Some(rtype) || doc["id"].as_str() != Some(id) {
        return Err(FhirError::BadRequest(
            "a patch may not change resourceType or id".into(),
        ));
    }
    check_resource(validator, rtype, &doc, Context::default())?;
    stage(txn, rtype, id, cur.version + 1, Method::Patch, doc, None)
}

/// Parse a JSON Patch document.
pub fn parse_patch(value: Value) -> Result<json_patch::Patch> {
    serde_json::from_value(value)
        .map_err(|e| FhirError::BadRequest(format!("invalid JSON Patch document: {e}")))
}

impl Services {
    /// Criteria of a conditional interaction, narrowed to what the caller may see (a
    /// submitter's conditional create, update or delete matches only its own resources).
    pub fn caller_criteria(&self, rtype: &str, query: &str) -> Result<Vec<Criterion>> {
        let mut q = query.to_string();
        for (k, v) in self.access.narrowing(rtype) {
            let pair: String = form_urlencoded::Serializer::new(String::new())
                .append_pair(&k, &v)
                .finish();
            if !q.is_empty() {
                q.push('&');
            }
            q.push_str(&pair);
        }
        let criteria = parse_criteria(rtype, &q)?;
        if super::search::joins(&criteria) && self.access.filters(Act::Search, rtype) {
            return Err(super::search::joins_refused());
        }
        Ok(criteria)
    }

    /// Refuse content the caller could not see once written (outside its scopes' restrictions
    /// or patient compartment).
    pub fn check_written(&self, act: Act, rtype: &str, resource: &Value) -> Result<()> {
        if self.access.filters(act, rtype) && !self.access.sees(act, rtype, resource) {
            return Err(FhirError::Forbidden(format!(
                "this {rtype} lies outside what the client's scopes allow it to write"
            )));
        }
        Ok(())
    }

    /// `POST [type]`.
    pub async fn create(
        &self,
        rtype: &str,
        mut resource: Value,
        if_none_exist: Option<&str>,
    ) -> Result<Written> {
        self.access.allow(Act::Create, rtype)?;
        self.access.admit(rtype, &mut resource)?;
        self.check_written(Act::Create, rtype, &resource)?;
        let (resource, index) = prepare(self.validator.clone(), rtype, resource).await?;
        let criteria = if_none_exist
            .map(|q| self.caller_criteria(rtype, q))
            .transpose()?;
        let rtype = rtype.to_string();
        store::write(self.store.as_ref(), move |txn| {
            create_in(
                txn,
                &rtype,
                resource,
                None,
                criteria.as_deref(),
                Some(index),
            )
        })
        .await
    }

    /// `PUT [type]/[id]`.
    pub async fn update(
        &self,
        rtype: &str,
        id: &str,
        mut resource: Value,
        if_match: Option<u64>,
    ) -> Result<Written> {
        check_id(id)?;
        self.access.allow(Act::Update, rtype)?;
        match resource["id"].as_str() {
            Some(body_id) if body_id == id => {}
            Some(body_id) => {
                return Err(FhirError::BadRequest(format!(
                    "the resource id '{body_id}' does not match the id '{id}' in the URL"
                )))
            }
            None => {
                return Err(FhirError::BadRequest(
                    "the resource to update must carry its id".into(),
                ))
            }
        }
        self.access.admit(rtype, &mut resource)?;
        self.check_written(Act::Update, rtype, &resource)?;
        let (resource, index) = prepare(self.validator.clone(), rtype, resource).await?;
        let (rtype, id) = (rtype.to_string(), id.to_string());
        let access = self.access.clone();
        store::write(self.store.as_ref(), move |txn| {
            update_in(txn, &access, &rtype, &id, resource, if_match, Some(index))
        })
        .await
    }

    /// `PUT [type]?criteria`.
    pub async fn conditional_update(
        &self,
        rtype: &str,
        query: &str,
        mut resource: Value,
    ) -> Result<Written> {
        self.access.allow(Act::Update, rtype)?;
        let criteria = self.caller_criteria(rtype, query)?;
        self.access.admit(rtype, &mut resource)?;
        self.check_written(Act::Update, rtype, &resource)?;
        let (resource, index) = prepare(self.validator.clone(), rtype, resource).await?;
        let rtype = rtype.to_string();
        let access = self.access.clone();
        store::write(self.store.as_ref(), move |txn| {
            conditional_update_in(txn, &access, &rtype, &criteria, resource, Some(index))
        })
        .await
    }

    /// `DELETE [type]/[id]`.
    pub async fn delete(&self, rtype: &str, id: &str, if_match: Option<u64>) -> Result<Written> {
        check_id(id)?;
        self.access.allow(Act::Delete, rtype)?;
        let (rtype, id) = (rtype.to_string(), id.to_string());
        let access = self.access.clone();
        store::write(self.store.as_ref(), move |txn| {
            delete_in(txn, &access, &rtype, &id, if_match)
        })
        .await
    }

    /// `DELETE [type]?criteria`.
    pub async fn conditional_delete(&self, rtype: &str, query: &str) -> Result<Written> {
        self.access.allow(Act::Delete, rtype)?;
        let criteria = self.caller_criteria(rtype, query)?;
        let rtype = rtype.to_string();
        let access = self.access.clone();
        store::write(self.store.as_ref(), move |txn| {
            conditional_delete_in(txn, &access, &rtype, &criteria)
        })
        .await
    }

    /// `PATCH [type]/[id]` with a JSON Patch.
    pub async fn patch(
        &self,
        rtype: &str,
        id: &str,
        patch: Value,
        if_match: Option<u64>,
    ) -> Result<Written> {
        check_id(id)?;
        self.access.allow(Act::Update, rtype)?;
        let patch = parse_patch(patch)?;
        let validator: Arc<Validator> = self.validator.clone();
        let (rtype, id) = (rtype.to_string(), id.to_string());
        let access = self.access.clone();
        store::write(self.store.as_ref(), move |txn| {
            patch_in(txn, &access, &validator, &rtype, &id, &patch, if_match)
        })
        .await
    }
}
