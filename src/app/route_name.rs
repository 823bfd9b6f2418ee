//! Route names for the policies the binary drafts (`init --flask-routes`, `report`): a
//! name `check` accepts (letters, digits, `_`, `-`, starting with a letter, not a key
//! namespace the proxy keeps for itself), unique within the draft.

use std::collections::HashSet;

/// A name made from `words` (`api.get_item` → `api-get_item`), suffixed `-2`, `-3`, … when
/// `names` already holds it; the name returned is added to `names`.
pub(crate) fn unique(words: &str, names: &mut HashSet<String>) -> String {
    let mut base: String = words
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if !base.starts_with(|c: char| c.is_ascii_alphabetic()) {
        base.insert_str(0, "r-");
    }
    if crate::policy::key::RESERVED_NAMESPACES.contains(&base.as_str()) {
        base.push_str("-route");
    }
    let mut name = base.clone();
    let mut n = 2;
    while !names.insert(name.clone()) {
        name = format!("{base}-{n}");
        n += 1;
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_and_unique() {
        let mut names = HashSet::new();
        assert_eq!(unique("api.get_item", &mut names), "api-get_item");
        assert_eq!(unique("api.get_item", &mut names), "api-get_item-2");
        assert_eq!(unique("tag", &mut names), "tag-route");
        assert_eq!(unique("tag", &mut names), "tag-route-2");
        assert_eq!(unique("2fa", &mut names), "r-2fa");
    }
}
