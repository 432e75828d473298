//! etcd's Range semantics over any [`VersionReader`]: revision checks, `limit`/`more`/`count`,
//! min/max revision filters, sorting, `keys_only` and `count_only`, exactly as etcd 3.4 applies them.

use super::{KeySpan, Version, VersionReader};
use crate::error::{Error, Result};
use crate::ids::Revision;
use crate::kv::{RangeQuery, RangeResult, SortOrder, SortTarget};
use crate::proto::mvccpb::KeyValue;

/// The wire form of one version of `key`.
pub fn key_value(key: &[u8], v: Version) -> KeyValue {
    KeyValue {
        key: key.to_vec(),
        create_revision: v.create_revision.get(),
        mod_revision: v.mod_revision.get(),
        version: v.version,
        value: v.value.unwrap_or_default(),
        lease: v.lease,
    }
}

/// Resolves a requested read revision (0 = current) against the reader's window.
pub fn check_revision(reader: &dyn VersionReader, requested: Revision) -> Result<Revision> {
    let current = reader.current_revision();
    if requested > current {
        return Err(Error::FutureRevision);
    }
    let rev = if requested.get() <= 0 { current } else { requested };
    if rev < reader.compact_revision() {
        return Err(Error::Compacted);
    }
    Ok(rev)
}

/// The live key-values of `span` at `rev`, at most `max` of them (0 = all), and how many there are.
/// Past `max`, keys are only counted (without decoding values).
pub fn collect(reader: &dyn VersionReader, span: &KeySpan, rev: Revision, max: usize) -> Result<(Vec<KeyValue>, i64)> {
    let mut kvs = Vec::new();
    let mut more = false;
    reader.visit(span, rev, &mut |key, version| {
        if max != 0 && kvs.len() >= max {
            more = true;
            return false;
        }
        kvs.push(key_value(key, version));
        true
    })?;
    let count = if more { reader.count(span, rev)? } else { kvs.len() as i64 };
    Ok((kvs, count))
}

/// Answers a range as etcd does, with the reader's current revision.
pub fn execute(reader: &dyn VersionReader, req: &RangeQuery) -> Result<RangeResult> {
    let rev = check_revision(reader, req.revision)?;
    let revision = reader.current_revision();
    let span = KeySpan::from_etcd(&req.key, &req.range_end);
    if req.count_only {
        let count = reader.count(&span, rev)?;
        return Ok(RangeResult { kvs: vec![], more: false, count, revision });
    }
    let target = req.sort_target;
    let filtered = req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    // Sorting and filtering need every key; otherwise fetch one extra to learn whether there is `more`.
    // etcd fetches every key for any order other than NONE, even one it does not know.
    let fetch = if req.sort_order != SortOrder::None || filtered || req.limit <= 0 {
        0
    } else {
        usize::try_from(req.limit).unwrap_or(usize::MAX - 1).saturating_add(1)
    };
    let (mut kvs, count) = collect(reader, &span, rev, fetch)?;
    if req.max_mod_revision != 0 {
        kvs.retain(|kv| kv.mod_revision <= req.max_mod_revision);
    }
    if req.min_mod_revision != 0 {
        kvs.retain(|kv| kv.mod_revision >= req.min_mod_revision);
    }
    if req.max_create_revision != 0 {
        kvs.retain(|kv| kv.create_revision <= req.max_create_revision);
    }
    if req.min_create_revision != 0 {
        kvs.retain(|kv| kv.create_revision >= req.min_create_revision);
    }
    // A target other than KEY with no order sorts ascending; an order etcd does not know sorts nothing
    // (etcd promotes only NONE, then sorts only for ASCEND and DESCEND).
    let order = match req.sort_order {
        SortOrder::None if target != SortTarget::Key => SortOrder::Ascend,
        order => order,
    };
    if matches!(order, SortOrder::Ascend | SortOrder::Descend) {
        // Stable, so ties keep key order (what etcd's insertion sort gives for small results).
        let cmp = |a: &KeyValue, b: &KeyValue| match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        };
        match order {
            SortOrder::Descend => kvs.sort_by(|a, b| cmp(b, a)),
            _ => kvs.sort_by(cmp),
        }
    }
    let mut more = false;
    if req.limit > 0 && kvs.len() > req.limit as usize {
        kvs.truncate(req.limit as usize);
        more = true;
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    Ok(RangeResult { kvs, more, count, revision })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A reader holding one version per key, all at one revision.
    struct Latest(BTreeMap<Vec<u8>, Version>);

    impl VersionReader for Latest {
        fn current_revision(&self) -> Revision {
            Revision(10)
        }
        fn compact_revision(&self) -> Revision {
            Revision(-1)
        }
        fn visit(&self, span: &KeySpan, _rev: Revision, visit: &mut dyn FnMut(&[u8], Version) -> bool) -> Result<()> {
            for (key, version) in self.0.iter().filter(|(k, _)| span.contains(k)) {
                if !visit(key, version.clone()) {
                    break;
                }
            }
            Ok(())
        }
    }

    /// Keys `a`, `b`, `c` at versions 3, 1, 2.
    fn reader() -> Latest {
        let version = |version| Version {
            create_revision: Revision(2),
            mod_revision: Revision(5),
            version,
            lease: 0,
            value: Some(vec![]),
        };
        Latest([(b"a", 3), (b"b", 1), (b"c", 2)].into_iter().map(|(k, v)| (k.to_vec(), version(v))).collect())
    }

    fn keys(resp: &RangeResult) -> Vec<&[u8]> {
        resp.kvs.iter().map(|kv| kv.key.as_slice()).collect()
    }

    #[test]
    fn an_unknown_sort_order_sorts_nothing_but_still_fetches_every_key() {
        // (the wire's 3 and -1 both arrive as `Unknown`: `src/etcd/convert.rs`)
        let req = RangeQuery {
            key: vec![0],
            range_end: vec![0],
            limit: 2,
            sort_order: SortOrder::Unknown,
            sort_target: SortTarget::Version,
            ..Default::default()
        };
        let resp = execute(&reader(), &req).unwrap();
        assert_eq!(keys(&resp), [b"a", b"b"], "key order, as etcd 3.4 answers");
        assert!(resp.more);
        assert_eq!(resp.count, 3);
    }

    #[test]
    fn no_sort_order_with_a_target_other_than_key_sorts_ascending_within_limit_plus_one() {
        let req = RangeQuery {
            key: vec![0],
            range_end: vec![0],
            limit: 1,
            sort_target: SortTarget::Version,
            ..Default::default()
        };
        // etcd fetches limit + 1 keys in key order (a, b), sorts them by version, then truncates.
        let resp = execute(&reader(), &req).unwrap();
        assert_eq!(keys(&resp), [b"b"]);
        assert!(resp.more);
    }
}
