//! Topic names, templates, filters and event-name globs: the pure string work of the
//! publish and subscribe paths.
//!
//! - [`template`]: a route's `topic` (and other templated strings) is parsed once at config
//!   load into a [`Template`]; per event it is rendered from the event name, the event's
//!   JSON fields and the built-ins `{hostname}` / `{prefix}`. Rendered *values* are
//!   sanitised (`+`, `#`, NUL become `_`; `/` optionally too) and the finished topic is
//!   validated, so a bad event yields a [`RenderError`] (HTTP 422), never a bad PUBLISH.
//! - [`filter`]: MQTT topic-name validation, [`TopicFilter`] parsing (including
//!   `$share/{group}/{filter}`) and matching per the MQTT rules; [`join_prefix`].
//! - [`glob`]: [`EventGlob`] (`*`, `?`) for route `match` lists and [`GlobSet`], which
//!   finds every route that matches an event name.
//!
//! Nothing here does I/O or allocates more than the output string on the hot path.

pub mod filter;
pub mod glob;
pub mod template;

pub use filter::{MAX_TOPIC_LEN, TopicError, TopicFilter, join_prefix, validate_topic_name};
pub use glob::{EventGlob, GlobError, GlobSet};
pub use template::{
    Allowed, FieldRule, Placeholder, RenderContext, RenderError, SlashPolicy, Template,
    TemplateError,
};
