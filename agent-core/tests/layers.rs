//! The engine's modules run one way: no module uses a module that (directly or through others)
//! uses it. Read from the source: every `crate::a::b` and `super::a` path outside comments is
//! an edge from its file to the file of the deepest module it names (the crate root, a facade
//! of re-exports, is left out). A circle fails the test and is printed.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            // The in-crate test modules use everything by design.
            if p.file_name().is_some_and(|n| n != "tests") {
                rust_files(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file under `src`: `commands/mod.rs` -> ["commands"].
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut m: Vec<String> = rel
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    if m.last().is_some_and(|l| l == "mod" || l == "lib") {
        m.pop();
    }
    m
}

/// The file of the deepest existing module named by `path` (module segments first).
fn file_of(modules: &BTreeMap<Vec<String>, PathBuf>, path: &[String]) -> Option<PathBuf> {
    (1..=path.len())
        .rev()
        .find_map(|n| modules.get(&path[..n].to_vec()).cloned())
}

/// Every `crate::…` / `super::…` path in `text`, outside comments, expanded through one level
/// of `{…}` groups.
fn paths(text: &str) -> Vec<(bool, Vec<String>)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        for (prefix, is_crate) in [("crate::", true), ("super::", false)] {
            let mut rest = code;
            while let Some(i) = rest.find(prefix) {
                let before = rest[..i].chars().last();
                rest = &rest[i + prefix.len()..];
                // `$crate::` (in macros) counts; `xcrate::` does not.
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    continue;
                }
                let seg: String = rest
                    .chars()
                    .take_while(|c| {
                        c.is_alphanumeric()
                            || *c == '_'
                            || *c == ':'
                            || *c == '{'
                            || *c == ','
                            || *c == ' '
                    })
                    .collect();
                let head: Vec<String> = seg
                    .split('{')
                    .next()
                    .unwrap_or("")
                    .split("::")
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                if let Some((_, group)) = seg.split_once('{') {
                    for item in group.split(',') {
                        let mut p = head.clone();
                        p.extend(
                            item.split("::")
                                .map(|s| s.trim().to_string())
                                .filter(|s| !s.is_empty()),
                        );
                        out.push((is_crate, p));
                    }
                } else {
                    out.push((is_crate, head));
                }
            }
        }
    }
    out
}

#[test]
fn no_module_uses_a_module_that_uses_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeMap<Vec<String>, PathBuf> = files
        .iter()
        .map(|f| (module_of(&src, f), f.clone()))
        .collect();
    let mut edges: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for f in &files {
        let here = module_of(&src, f);
        let is_mod_file = f
            .file_name()
            .is_some_and(|n| n == "mod.rs" || n == "lib.rs");
        let text = fs::read_to_string(f).unwrap();
        for (is_crate, p) in paths(&text) {
            let full = if is_crate {
                p
            } else {
                // `super` of a mod.rs is its parent directory's parent module.
                let mut base = here.clone();
                if !is_mod_file || !base.is_empty() {
                    base.pop();
                }
                base.extend(p);
                base
            };
            if full.is_empty() {
                continue;
            }
            if let Some(to) = file_of(&modules, &full)
                && &to != f
                && !to.ends_with("lib.rs")
            {
                edges.entry(f.clone()).or_default().insert(to);
            }
        }
    }
    // Depth-first search for a back edge.
    fn visit(
        n: &PathBuf,
        edges: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
        stack: &mut Vec<PathBuf>,
        done: &mut BTreeSet<PathBuf>,
    ) -> Option<Vec<PathBuf>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            return Some(stack[i..].to_vec());
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.clone());
        for m in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, edges, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.clone());
        None
    }
    let mut done = BTreeSet::new();
    for f in &files {
        if let Some(circle) = visit(f, &edges, &mut Vec::new(), &mut done) {
            let mut names: Vec<String> = circle
                .iter()
                .map(|p| p.strip_prefix(&src).unwrap().display().to_string())
                .collect();
            names.push(names[0].clone());
            panic!("modules in a circle: {}", names.join(" -> "));
        }
    }
    // The test sees the layers it is about.
    let uses = |a: &str, b: &str| {
        edges
            .get(&src.join(a))
            .is_some_and(|s| s.contains(&src.join(b)))
    };
    assert!(uses("engine.rs", "commands/platform.rs"));
    assert!(uses("commands/clock.rs", "reply.rs"));
    assert!(uses("reply.rs", "out.rs"));
    assert!(uses("json/framer.rs", "json/nest.rs"));
}
