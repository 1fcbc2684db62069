//! Search available before the full search engine lands: `_id` and `identifier` criteria (ANDed,
//! comma-separated values ORed), or all resources of a type; paged by id with `_count`/`_cursor`.

use serde_json::{json, Value};

use super::read::resource_of;
use super::{new_bundle, Services};
use crate::error::{FhirError, Result};
use crate::search::{matching_ids, parse_criteria, query_param as param};

impl Services {
    /// `GET [type]?query`: a searchset Bundle.
    pub fn search(&self, rtype: &str, query: &str, base: &str) -> Result<Value> {
        let limits = self.limits;
        let count = match param(query, "_count") {
            Some(c) => c.parse::<usize>().map_err(|_| {
                FhirError::BadRequest(format!("_count must be a non-negative integer, got '{c}'"))
            })?,
            None => limits.default_page_size,
        }
        .min(limits.max_page_size);
        let store = &self.store;
        let filtering: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .filter(|(k, _)| !matches!(k.as_ref(), "_count" | "_format" | "_pretty" | "_cursor"))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let (records, total, next) = if filtering.is_empty() {
            let after = param(query, "_cursor");
            let mut recs = store.list(rtype, after.as_deref(), count + 1)?;
            let more = recs.len() > count;
            recs.truncate(count);
            let next = if more {
                recs.last().map(|r| r.id.clone())
            } else {
                None
            };
            (recs, None, next)
        } else {
            let criteria = parse_criteria(query)?;
            let ids = matching_ids(
                &criteria,
                &mut |p, v| store.lookup(rtype, p, v),
                &mut |id| Ok(store.current(rtype, id)?.is_some_and(|r| !r.deleted())),
            )?;
            let total = ids.len();
            let after = param(query, "_cursor");
            let page: Vec<&String> = ids
                .iter()
                .filter(|id| after.as_ref().is_none_or(|a| *id > a))
                .take(count + 1)
                .collect();
            let more = page.len() > count;
            let mut recs = Vec::new();
            for id in page.iter().take(count) {
                if let Some(r) = store.current(rtype, id)? {
                    recs.push(r);
                }
            }
            let next = if more {
                recs.last().map(|r| r.id.clone())
            } else {
                None
            };
            (recs, Some(total), next)
        };
        let entries = records
            .iter()
            .map(|r| {
                Ok(json!({
                    "fullUrl": format!("{base}/{rtype}/{}", r.id),
                    "resource": resource_of(r)?,
                    "search": {"mode": "match"}
                }))
            })
            .collect::<Result<Vec<Value>>>()?;
        let mut links = vec![json!({"relation": "self", "url": format!("{base}/{rtype}?{query}")})];
        if let Some(n) = next {
            let kept: String = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(filtering.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .append_pair("_count", &count.to_string())
                .append_pair("_cursor", &n)
                .finish();
            links.push(json!({"relation": "next", "url": format!("{base}/{rtype}?{kept}")}));
        }
        let mut bundle = new_bundle("searchset", links, entries);
        if let Some(t) = total {
            bundle["total"] = json!(t);
        }
        Ok(bundle)
    }
}
