//! The README's tables are checked against the code, so they stay true:
//! the configuration table is the config crate's settings table, rendered
//! (every environment variable the code reads has a row, and every
//! variable in a row is read), and the workspace table is the map of the
//! tree (every crate in the workspace has a row naming its folder and
//! package, and every row names a path that exists).
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chatstream_config::table::{SETTINGS, markdown_table};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The README's section under `heading`, up to the next `## ` heading.
fn readme_section(heading: &str) -> String {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("read README.md");
    let section = readme
        .split_once(heading)
        .map(|(_, rest)| rest.split("\n## ").next().unwrap_or(rest).to_owned());
    section.unwrap_or_else(|| panic!("a `{heading}` section in README.md"))
}

/// The Markdown table in the README's `## Configuration` section.
fn readme_table() -> String {
    readme_section("## Configuration")
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

/// Workspace members as (folder, package name), from the root Cargo.toml.
fn workspace_crates() -> BTreeMap<String, String> {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).expect("read Cargo.toml");
    let members = manifest
        .split_once("members = [")
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(list, _)| list)
        .expect("a `members = [...]` list in Cargo.toml");
    members
        .split(',')
        .map(|member| member.trim().trim_matches('"'))
        .filter(|member| !member.is_empty())
        .map(|member| {
            let crate_manifest = std::fs::read_to_string(root().join(member).join("Cargo.toml"))
                .unwrap_or_else(|error| panic!("read {member}/Cargo.toml: {error}"));
            let name = crate_manifest
                .lines()
                .find_map(|line| line.strip_prefix("name = "))
                .map(|name| name.trim_matches('"').to_owned())
                .unwrap_or_else(|| panic!("{member}/Cargo.toml has no package name"));
            let folder = if member == "." {
                "src/".to_owned()
            } else {
                format!("{member}/")
            };
            (folder, name)
        })
        .collect()
}

/// Rows of the README's workspace table as (path, crate).
fn readme_rows() -> BTreeMap<String, String> {
    readme_section("## Workspace layout")
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.split(" | ").collect();
            let cell = |i: usize| {
                cells[i]
                    .trim_start_matches("| ")
                    .trim_matches('`')
                    .to_owned()
            };
            (cell(0), cell(1))
        })
        .collect()
}

#[test]
fn every_workspace_crate_has_a_row_in_the_readme_table() {
    let rows = readme_rows();
    for (folder, name) in workspace_crates() {
        assert_eq!(
            rows.get(&folder),
            Some(&name),
            "README.md's workspace table needs the row | `{folder}` | `{name}` | ... |"
        );
    }
}

#[test]
fn every_row_of_the_readme_table_names_a_path_that_exists() {
    let crates = workspace_crates();
    for (path, name) in readme_rows() {
        assert!(
            root().join(&path).exists(),
            "README.md's workspace table names `{path}`, which does not exist"
        );
        if name != "none" {
            assert_eq!(
                crates.get(&path),
                Some(&name),
                "README.md says `{path}` is the crate `{name}`, but the workspace disagrees"
            );
        }
    }
}
