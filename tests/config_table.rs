//! The README's configuration table is the config crate's settings table,
//! rendered: every environment variable the code reads has a row, and
//! every variable in a row is read.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use chatstream_config::table::{SETTINGS, markdown_table};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The Markdown table in the README's `## Configuration` section.
fn readme_table() -> String {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("read README.md");
    let section = readme
        .split_once("## Configuration")
        .map(|(_, rest)| rest.split("\n## ").next().unwrap_or(rest))
        .expect("a `## Configuration` section in README.md");
    section
        .lines()
        .skip_while(|line| !line.starts_with("| environment variable"))
        .take_while(|line| line.starts_with('|'))
        .map(|line| format!("{line}\n"))
        .collect()
}

#[test]
fn the_readme_table_is_the_settings_table() {
    let expected = markdown_table();
    assert!(
        readme_table() == expected,
        "README.md's configuration table differs from chatstream_config::table::SETTINGS; \
         replace it with:\n\n{expected}"
    );
}

/// Rust files under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// Every environment variable the production code names: clap's `env = "..."`
/// and `env::var("...")` / `env::var_os("...")` (tests' own variables, the
/// `CHATSTREAM_TEST_*` ones, are not settings).
fn variables_read_by_the_code() -> BTreeSet<String> {
    let mut dirs = vec![root().join("src"), root().join("gateway/src")];
    for parent in ["crates", "processors"] {
        for entry in std::fs::read_dir(root().join(parent)).expect("read dir") {
            let path = entry.expect("dir entry").path();
            if !path.ends_with("test-support") && path.join("src").is_dir() {
                dirs.push(path.join("src"));
            }
        }
    }
    let mut files = Vec::new();
    for dir in dirs {
        rust_files(&dir, &mut files);
    }
    let mut names = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read source");
        for opener in ["env = \"", "env::var(\"", "env::var_os(\""] {
            for (_, rest) in text.match_indices(opener).map(|(i, _)| text.split_at(i)) {
                let name: String = rest[opener.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                if !name.is_empty() && !name.starts_with("CHATSTREAM_TEST_") {
                    names.insert(name);
                }
            }
        }
    }
    names
}

#[test]
fn every_variable_read_has_a_row_and_every_row_is_read() {
    let in_table: BTreeSet<String> = SETTINGS
        .iter()
        .flat_map(|setting| setting.env.iter().map(|name| name.to_string()))
        .collect();
    let read_elsewhere = variables_read_by_the_code();
    for name in &read_elsewhere {
        assert!(
            in_table.contains(name),
            "the code reads {name}, which the settings table (and so the README) lacks"
        );
    }
    for setting in SETTINGS {
        for name in setting.env {
            assert!(
                setting.applied_by_config() || read_elsewhere.contains(*name),
                "the settings table lists {name}, but nothing reads it"
            );
        }
    }
}
