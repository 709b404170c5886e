//! The README's tables say what the binary does: every variable of `serve --help` with its
//! default in "Configuration", and only real settings in "Limits".

use std::collections::BTreeMap;

fn readme_section(title: &str) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find(&format!("\n## {title}\n"))
        .unwrap_or_else(|| panic!("README has a section {title}"));
    let rest = &readme[start + title.len() + 5..];
    rest[..rest.find("\n## ").unwrap_or(rest.len())].to_owned()
}

/// Every environment variable `serve --help` names, with its default (`None`: none).
fn help_variables() -> BTreeMap<String, Option<String>> {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_dispute-service"))
        .args(["serve", "--help"])
        .env_clear()
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    let mut variables = BTreeMap::new();
    for (i, _) in help.match_indices("[env: ") {
        let rest = &help[i + 6..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        let after = &rest[rest.find(']').unwrap() + 1..];
        let default = after
            .strip_prefix(" [default: ")
            .map(|d| d[..d.find(']').unwrap()].to_owned());
        variables.insert(name, default);
    }
    assert!(variables.len() > 30, "{variables:?}");
    variables
}

/// The rows of the first table in `section`: its cells, without the header.
fn table_rows(section: &str) -> Vec<Vec<String>> {
    section
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .skip(2)
        .map(|line| {
            line.trim_matches('|')
                .split(" | ")
                .map(|cell| cell.trim().to_owned())
                .collect()
        })
        .collect()
}

#[test]
fn the_configuration_table_lists_every_variable_with_its_default() {
    let help = help_variables();
    let mut documented = BTreeMap::new();
    for row in table_rows(&readme_section("Configuration")) {
        let name = row[0].trim_matches('`').to_owned();
        let default = match row[1].as_str() {
            "–" => None,
            quoted => Some(quoted.trim_matches('`').to_owned()),
        };
        assert!(
            documented.insert(name.clone(), default).is_none(),
            "{name} has two rows"
        );
    }
    // Read by the libraries, not by flags.
    for outside in ["RUST_LOG", "OTEL_*"] {
        assert!(
            documented.remove(outside).is_some(),
            "{outside} is documented"
        );
    }
    assert_eq!(
        documented.keys().collect::<Vec<_>>(),
        help.keys().collect::<Vec<_>>(),
        "the variables"
    );
    for (name, default) in &help {
        assert_eq!(&documented[name], default, "{name}'s default");
    }
}

#[test]
fn the_limits_table_names_only_real_settings_with_their_defaults() {
    let help = help_variables();
    let rows = table_rows(&readme_section("Limits"));
    assert!(rows.len() > 15);
    let mut named = 0;
    for row in rows {
        let setting = &row[2];
        for word in setting.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("DISPUTE_") {
                assert!(help.contains_key(word), "{word} is not a setting");
                named += 1;
            }
        }
        // A default written next to the setting: `NAME` (`default`).
        if let Some((name, default)) = setting.split_once(" (`") {
            let name = name.trim_matches('`');
            let default = default.trim_end_matches("`)");
            assert_eq!(help[name].as_deref(), Some(default), "{name}'s default");
        }
    }
    assert!(named > 10, "{named} settings named");
}
