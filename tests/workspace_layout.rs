//! The README's workspace table is the map of the tree: every crate in the
//! workspace has a row naming its folder and package, and every row names
//! a folder that exists.
use std::collections::BTreeMap;
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
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
    let readme = std::fs::read_to_string(root().join("README.md")).expect("read README.md");
    let table = readme
        .split_once("## Workspace layout")
        .map(|(_, rest)| rest.split("\n## ").next().unwrap_or(rest))
        .expect("a `## Workspace layout` section in README.md");
    table
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
