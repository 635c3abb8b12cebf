//! YAML text → [`Node`] tree, from `saphyr-parser`'s spanned events.
//!
//! Supports one document, anchors and aliases, `!!str`; duplicate keys and non-scalar keys
//! are errors. An empty document is an empty map (all defaults).

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use super::node::{Key, Kind, Loc, Node};

/// A syntax-level error with its location.
#[derive(Debug)]
pub(crate) struct SyntaxError {
    pub msg: String,
    pub loc: Loc,
}

const MAX_DEPTH: usize = 128;

fn loc(span: &Span) -> Loc {
    Loc {
        line: span.start.line(),
        col: span.start.col() + 1,
    }
}

struct Builder<'a> {
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    anchors: HashMap<usize, Node>,
    last: Loc,
}

pub(crate) fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut b = Builder {
        parser: Parser::new_from_str(text),
        anchors: HashMap::new(),
        last: Loc { line: 1, col: 1 },
    };
    let mut root: Option<Node> = None;
    loop {
        let (ev, span) = b.next()?;
        match ev {
            Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
            Event::DocumentStart(_) => {
                if root.is_some() {
                    return Err(SyntaxError {
                        msg: "only one YAML document is allowed".into(),
                        loc: loc(&span),
                    });
                }
                let (ev, span) = b.next()?;
                if matches!(ev, Event::DocumentEnd) {
                    root = Some(Node::new(Kind::Map(Vec::new()), loc(&span)));
                } else {
                    root = Some(b.node(ev, span, 0)?);
                }
            }
            Event::StreamEnd => break,
            _ => {
                return Err(SyntaxError {
                    msg: "unexpected YAML event outside a document".into(),
                    loc: loc(&span),
                });
            }
        }
    }
    Ok(root.unwrap_or_else(|| Node::new(Kind::Map(Vec::new()), Loc { line: 1, col: 1 })))
}

impl<'a> Builder<'a> {
    fn next(&mut self) -> Result<(Event<'a>, Span), SyntaxError> {
        match self.parser.next() {
            Some(Ok((ev, span))) => {
                self.last = loc(&span);
                Ok((ev, span))
            }
            Some(Err(e)) => Err(SyntaxError {
                msg: e.info().to_string(),
                loc: Loc {
                    line: e.marker().line(),
                    col: e.marker().col() + 1,
                },
            }),
            None => Err(SyntaxError {
                msg: "unexpected end of YAML".into(),
                loc: self.last,
            }),
        }
    }

    fn node(&mut self, ev: Event<'a>, span: Span, depth: usize) -> Result<Node, SyntaxError> {
        let at = loc(&span);
        if depth > MAX_DEPTH {
            return Err(SyntaxError {
                msg: format!("nested deeper than {MAX_DEPTH} levels"),
                loc: at,
            });
        }
        let (node, anchor) = match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let is_str_tag = tag
                    .as_ref()
                    .is_some_and(|t| t.is_yaml_core_schema() && t.suffix == "str");
                let kind = if style == ScalarStyle::Plain && !is_str_tag {
                    Kind::Plain(text.into_owned())
                } else {
                    Kind::Str(text.into_owned())
                };
                (Node::new(kind, at), anchor)
            }
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                loop {
                    let (ev, span) = self.next()?;
                    if matches!(ev, Event::SequenceEnd) {
                        break;
                    }
                    items.push(self.node(ev, span, depth + 1)?);
                }
                (Node::new(Kind::Seq(items), at), anchor)
            }
            Event::MappingStart(anchor, _) => {
                let mut entries: Vec<(Key, Node)> = Vec::new();
                loop {
                    let (ev, kspan) = self.next()?;
                    let name = match ev {
                        Event::MappingEnd => break,
                        Event::Scalar(text, ..) => text.into_owned(),
                        Event::Alias(id) => match self.anchors.get(&id).map(|n| &n.kind) {
                            Some(Kind::Str(s) | Kind::Plain(s)) => s.clone(),
                            _ => return Err(not_scalar_key(&kspan)),
                        },
                        _ => return Err(not_scalar_key(&kspan)),
                    };
                    let key = Key {
                        name,
                        loc: loc(&kspan),
                    };
                    if entries.iter().any(|(k, _)| k.name == key.name) {
                        return Err(SyntaxError {
                            msg: format!("duplicate key '{}'", key.name),
                            loc: key.loc,
                        });
                    }
                    let (ev, vspan) = self.next()?;
                    let value = self.node(ev, vspan, depth + 1)?;
                    entries.push((key, value));
                }
                (Node::new(Kind::Map(entries), at), anchor)
            }
            Event::Alias(id) => match self.anchors.get(&id) {
                Some(n) => {
                    let mut n = n.clone();
                    n.loc = at;
                    return Ok(n);
                }
                None => {
                    return Err(SyntaxError {
                        msg: "alias refers to an unknown anchor".into(),
                        loc: at,
                    });
                }
            },
            _ => {
                return Err(SyntaxError {
                    msg: "unexpected YAML structure".into(),
                    loc: at,
                });
            }
        };
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        Ok(node)
    }
}

fn not_scalar_key(span: &Span) -> SyntaxError {
    SyntaxError {
        msg: "map keys must be plain strings".into(),
        loc: loc(span),
    }
}
