//! The layers stay layered: no import cycle between the source files of `mqlink` below
//! `topology` (and of `mqlink-spool`).
//!
//! Each `.rs` file is a module (`foo.rs`, `foo/mod.rs` → `foo`; `foo/bar.rs` → `foo::bar`).
//! Every `crate::…`, `super::…` and `self::…` path in the code (comments skipped; `use`
//! groups expanded) is an edge to the longest module prefix of the path that is a file.
//! Edges from a module to one of its ancestors are not counted: a child naturally uses the
//! items its parent declares or re-exports, while the parent declares the child. The
//! converse is the discipline this test enforces: to depend on a module from below, import
//! the leaf file (`crate::observe::meter::Dir`), never a re-export through a parent that
//! itself depends on you.
//!
//! `lib.rs` and `topology.rs` (which assemble everything) are not checked.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`a::b`, empty for the root) of every `.rs` file under `src`.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<String, PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if p.is_dir() {
                let mut next = prefix.to_vec();
                next.push(name);
                walk(&p, &next, out);
            } else if let Some(stem) = name.strip_suffix(".rs") {
                let mut path = prefix.to_vec();
                if stem != "mod" && stem != "lib" {
                    path.push(stem.to_string());
                }
                out.insert(path.join("::"), p);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(src, &[], &mut out);
    out
}

/// The code of a file without comments and string literals (their text is not code).
fn code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            i += 2;
            while i < b.len() && !b[i..].starts_with(b"*/") {
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && i + 2 < b.len() && (b[i + 2] == b'\'' || b[i + 1] == b'\\') {
            // A char literal such as '"' or '\n' (lifetimes have no closing quote).
            let end = b[i + 1..].iter().position(|c| *c == b'\'').unwrap_or(0) + i + 2;
            i = end;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// Expand the path tree starting at `s` (after `crate::`): `a::b`, `a::{b, c::d}`, `{a, b}`.
fn paths(s: &str) -> Vec<Vec<String>> {
    fn ident(s: &[u8], i: &mut usize) -> Option<String> {
        let start = *i;
        while *i < s.len() && (s[*i].is_ascii_alphanumeric() || s[*i] == b'_') {
            *i += 1;
        }
        (start < *i).then(|| String::from_utf8_lossy(&s[start..*i]).into_owned())
    }
    fn skip_ws(s: &[u8], i: &mut usize) {
        while *i < s.len() && s[*i].is_ascii_whitespace() {
            *i += 1;
        }
    }
    fn tree(s: &[u8], i: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
        skip_ws(s, i);
        if *i < s.len() && s[*i] == b'{' {
            *i += 1;
            loop {
                skip_ws(s, i);
                if *i >= s.len() || s[*i] == b'}' {
                    *i += 1;
                    return;
                }
                tree(s, i, prefix.clone(), out);
                skip_ws(s, i);
                if *i < s.len() && s[*i] == b',' {
                    *i += 1;
                }
            }
        }
        let mut path = prefix;
        while let Some(id) = ident(s, i) {
            path.push(id);
            if s[*i..].starts_with(b"::") {
                *i += 2;
                if *i < s.len() && s[*i] == b'{' {
                    tree(s, i, path, out);
                    return;
                }
            } else {
                break;
            }
        }
        // `as name` and `*` end the path; skip them.
        skip_ws(s, i);
        if s[*i..].starts_with(b"as ") {
            *i += 3;
            skip_ws(s, i);
            ident(s, i);
        } else if *i < s.len() && s[*i] == b'*' {
            *i += 1;
        }
        out.push(path);
    }
    let mut out = Vec::new();
    let mut i = 0;
    tree(s.as_bytes(), &mut i, Vec::new(), &mut out);
    out
}

/// Edges `module → module it uses`, without self-edges and edges to ancestors.
fn edges(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules(src);
    let resolve = |path: &[String]| -> Option<String> {
        (0..=path.len())
            .rev()
            .map(|n| path[..n].join("::"))
            .find(|m| mods.contains_key(m))
    };
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, file) in &mods {
        let text = code(&std::fs::read_to_string(file).unwrap());
        let here: Vec<String> = if module.is_empty() {
            vec![]
        } else {
            module.split("::").map(String::from).collect()
        };
        // Inside `foo/bar.rs`, `super` is `foo`; `self` is `foo::bar`.
        let bases: [(&str, Vec<String>); 3] = [
            ("crate::", vec![]),
            ("super::", here[..here.len().saturating_sub(1)].to_vec()),
            ("self::", here.clone()),
        ];
        let deps = graph.entry(module.clone()).or_default();
        for (marker, base) in &bases {
            for (at, _) in text.match_indices(marker) {
                // Only whole tokens: not `foo_crate::` or `super::super` halves.
                let before = text[..at].chars().next_back();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                    continue;
                }
                for p in paths(&text[at + marker.len()..]) {
                    let mut full = base.clone();
                    for seg in p {
                        match seg.as_str() {
                            "super" => {
                                full.pop();
                            }
                            "self" => {}
                            _ => full.push(seg),
                        }
                    }
                    let Some(target) = resolve(&full) else {
                        continue;
                    };
                    let ancestor = target.is_empty()
                        || module == &target
                        || module.starts_with(&format!("{target}::"));
                    if !ancestor {
                        deps.insert(target);
                    }
                }
            }
        }
    }
    graph
}

/// The first cycle found, as a list of modules (first repeated at the end).
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(n.to_string(), Mark::Open);
        stack.push(n.to_string());
        for m in graph.get(n).into_iter().flatten() {
            match marks.get(m).copied().unwrap_or(Mark::New) {
                Mark::Open => {
                    let from = stack.iter().position(|s| s == m).unwrap_or(0);
                    let mut c = stack[from..].to_vec();
                    c.push(m.clone());
                    return Some(c);
                }
                Mark::New => {
                    if let Some(c) = visit(m, graph, marks, stack) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        marks.insert(n.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for n in graph.keys() {
        if marks.get(n).copied().unwrap_or(Mark::New) == Mark::New {
            let mut stack = Vec::new();
            if let Some(c) = visit(n, graph, &mut marks, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

fn check(src: &Path, above: &[&str], known: &[(&str, &str)]) {
    let mut graph = edges(src);
    for top in above {
        graph.remove(*top);
    }
    for (from, to) in known {
        let removed = graph.get_mut(*from).is_some_and(|out| out.remove(*to));
        assert!(
            removed,
            "known edge {from} → {to} is gone: drop it from the list"
        );
    }
    if let Some(c) = cycle(&graph) {
        panic!(
            "import cycle in {}: {}\n(import the leaf module instead of a re-export, or move \
             the shared item down into a module that imports neither)",
            src.display(),
            c.join(" → ")
        );
    }
}

fn src(krate: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(krate)
        .join("src")
}

#[test]
fn the_library_below_topology_has_no_import_cycle() {
    // No allowance: the config tree holds the sink registry's `sink:` enum, and sinks
    // validate with the leaves `config::{ctx, shared, error, node, secret}`.
    check(&src("mqlink"), &["", "topology"], &[]);
}

#[test]
fn the_spool_has_no_import_cycle() {
    check(&src("spool"), &[""], &[]);
}

#[test]
fn the_checker_sees_grouped_relative_and_inline_paths() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path();
    std::fs::create_dir_all(s.join("a")).unwrap();
    std::fs::write(s.join("lib.rs"), "pub mod a; pub mod b; pub mod c;").unwrap();
    std::fs::write(
        s.join("a/mod.rs"),
        "//! uses crate::c in a comment only\nmod x;\nuse crate::{b::{self, Thing as T}};",
    )
    .unwrap();
    std::fs::write(
        s.join("a/x.rs"),
        "use super::Y; fn f() { super::super::c::g(); }",
    )
    .unwrap();
    std::fs::write(
        s.join("b.rs"),
        "fn f() { let s = \"crate::c\"; crate::c::h(); }",
    )
    .unwrap();
    std::fs::write(s.join("c.rs"), "pub fn g() {}").unwrap();
    let g = edges(s);
    let set = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(g["a"], set(&["b"]), "the comment is not an import");
    assert_eq!(
        g["a::x"],
        set(&["c"]),
        "super:: to the parent is not counted"
    );
    assert_eq!(g["b"], set(&["c"]), "a string is not an import");
    assert!(cycle(&g).is_none());
    // Close the loop c → a: a → b → c → a.
    std::fs::write(s.join("c.rs"), "use crate::a::{Y};").unwrap();
    let c = cycle(&edges(s)).expect("the injected cycle is found");
    assert_eq!(c, ["a", "b", "c", "a"].map(String::from).to_vec());
}
