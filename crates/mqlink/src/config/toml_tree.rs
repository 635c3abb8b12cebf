//! TOML text → [`Node`] tree, from `toml`'s spanned `DeTable`.

use toml::de::{DeTable, DeValue};

use super::node::{Key, Kind, Loc, Node};
use super::yaml_tree::SyntaxError;

/// Maps byte offsets to 1-based line and character column.
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub(super) fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { text, starts }
    }

    pub(super) fn loc(&self, offset: usize) -> Loc {
        let offset = offset.min(self.text.len());
        let line = self.starts.partition_point(|s| *s <= offset);
        let start = self.starts[line - 1];
        let col = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count())
            + 1;
        Loc { line, col }
    }
}

pub(crate) fn parse(text: &str) -> Result<Node, SyntaxError> {
    let index = LineIndex::new(text);
    let table = DeTable::parse(text).map_err(|e| SyntaxError {
        msg: e.message().trim().to_string(),
        loc: index.loc(e.span().map_or(0, |s| s.start)),
    })?;
    let at = index.loc(table.span().start);
    Ok(Node::new(table_kind(table.get_ref(), &index), at))
}

fn table_kind(table: &DeTable<'_>, index: &LineIndex<'_>) -> Kind {
    Kind::Map(
        table
            .iter()
            .map(|(k, v)| {
                let key = Key {
                    name: k.get_ref().to_string(),
                    loc: index.loc(k.span().start),
                };
                let node = Node::new(value_kind(v.get_ref(), index), index.loc(v.span().start));
                (key, node)
            })
            .collect(),
    )
}

fn value_kind(v: &DeValue<'_>, index: &LineIndex<'_>) -> Kind {
    match v {
        DeValue::String(s) => Kind::Str(s.to_string()),
        DeValue::Integer(i) => i64::from_str_radix(&i.as_str().replace('_', ""), i.radix())
            .map_or_else(|_| Kind::Str(i.as_str().to_string()), Kind::Int),
        DeValue::Float(f) => f
            .as_str()
            .replace('_', "")
            .parse::<f64>()
            .map_or_else(|_| Kind::Str(f.as_str().to_string()), Kind::Float),
        DeValue::Boolean(b) => Kind::Bool(*b),
        DeValue::Datetime(d) => Kind::Str(d.to_string()),
        DeValue::Array(a) => Kind::Seq(
            a.iter()
                .map(|v| Node::new(value_kind(v.get_ref(), index), index.loc(v.span().start)))
                .collect(),
        ),
        DeValue::Table(t) => table_kind(t, index),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_index_counts_lines_and_characters() {
        let idx = LineIndex::new("ab\nçd\n");
        assert_eq!(idx.loc(0), Loc { line: 1, col: 1 });
        assert_eq!(idx.loc(3), Loc { line: 2, col: 1 });
        assert_eq!(idx.loc(5), Loc { line: 2, col: 2 });
        assert_eq!(idx.loc(7), Loc { line: 3, col: 1 });
    }
}
