//! The `spool` section: directory, size bound, full and corruption policies, fsync.

use std::path::PathBuf;
use std::time::Duration;

use super::R;
use crate::config::ctx::Ctx;
use crate::config::node::KeyPath;
use crate::config::raw::*;
use crate::config::types::*;

pub(super) fn spool(raw: RawSpool, ctx: &Ctx<'_>, path: &KeyPath) -> R<Spool> {
    let dir = raw.dir.unwrap_or_else(|| "./mqlink-data".into());
    ctx.non_empty(&dir, &path.key("dir"))?;
    Ok(Spool {
        dir: PathBuf::from(dir),
        max_bytes: ctx.bytes(
            raw.max_bytes.as_deref(),
            &path.key("max_bytes"),
            1 << 30,
            1 << 20,
        )?,
        on_full: match raw.on_full {
            None | Some(RawOnFull::Reject) => OnFull::Reject,
            Some(RawOnFull::Block) => OnFull::Block,
            Some(RawOnFull::DropOldest) => OnFull::DropOldest,
        },
        fsync: ctx.fsync(raw.fsync, raw.fsync_interval.as_deref(), path)?,
        on_corruption: match raw.on_corruption {
            None | Some(RawOnCorruption::Fail) => OnCorruption::Fail,
            Some(RawOnCorruption::Discard) => OnCorruption::Discard,
        },
        stall_timeout: ctx.duration(
            raw.stall_timeout.as_deref(),
            &path.key("stall_timeout"),
            Duration::from_secs(60),
        )?,
    })
}
