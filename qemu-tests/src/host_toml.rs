//! Edits of a scenario's host.toml that keep what the scenario wrote: its
//! keys, comments and layout stay; only what the harness needs is added.
//!
//! [`merge_admin`] adds the harness's public key to `[ssh] authorized_keys`
//! and the admin NIC ([`ADMIN_MAC`], named [`ADMIN_LINK`], DHCP) as a
//! `[[network.link]]`, so [`crate::Machine::exec`] can log in. A host.toml
//! that already says something about that NIC or that name is refused
//! rather than overridden: the scenario would then test a config it did
//! not write.

use crate::error::{Error, Result};
use crate::ssh::{ADMIN_LINK, ADMIN_MAC};
use toml_edit::{value, Array, ArrayOfTables, DocumentMut, InlineTable, Item, Table, Value};

/// What the messages call the file.
const WHAT: &str = "scenario host.toml";

/// The admin NIC as a link reference (`mac:..`).
pub fn admin_mac_ref() -> String {
    format!("mac:{ADMIN_MAC}")
}

/// `host_toml` plus `public_key` in `[ssh] authorized_keys` (unless it is
/// there already) and the `[[network.link]]` of the admin NIC (unless an
/// identical one is there already). Errors when the text is not TOML, when
/// `[ssh]`/`[network]` have a shape walden does not read, or when the
/// network config already refers to the admin NIC's MAC or name otherwise.
pub fn merge_admin(host_toml: &str, public_key: &str) -> Result<String> {
    let mut doc: DocumentMut = host_toml
        .parse()
        .map_err(|e: toml_edit::TomlError| Error::unexpected(WHAT, e.to_string()))?;
    let has_link = check_network(&doc)?;
    add_key(&mut doc, public_key.trim())?;
    if !has_link {
        add_link(&mut doc)?;
    }
    Ok(doc.to_string())
}

/// Whether `[network]` already has the admin link exactly as the harness
/// writes it; an error when anything else in it names the admin NIC.
fn check_network(doc: &DocumentMut) -> Result<bool> {
    let Some(network) = doc.get("network") else {
        return Ok(false);
    };
    if network.as_table_like().is_none() {
        return Err(Error::unexpected(WHAT, "`network` is not a table"));
    }
    let mut hits = Vec::new();
    walk(network, "network", &mut hits);
    if hits.is_empty() {
        return Ok(false);
    }
    // All mentions inside one link entry identical to the harness's own?
    let links = links(network);
    let same = links.iter().find(|(_, t)| is_admin_link(*t));
    if let Some((prefix, _)) = same {
        let inside = |p: &str| p == prefix || p.starts_with(&format!("{prefix}."));
        if hits.iter().all(|(p, _)| inside(p)) {
            return Ok(true);
        }
    }
    let listed: Vec<String> = hits.iter().map(|(p, v)| format!("{p} = {v:?}")).collect();
    Err(Error::unexpected(
        WHAT,
        format!(
            "it already configures the admin NIC (MAC {ADMIN_MAC}, name {ADMIN_LINK}) that admin_ssh() adds: {}; \
             drop those keys and let admin_ssh() add `[[network.link]] name = \"{ADMIN_LINK}\" match = \"{}\" dhcp = true`, \
             or do not use admin_ssh() in this scenario",
            listed.join(", "),
            admin_mac_ref()
        ),
    ))
}

/// The `[[network.link]]` entries (array of tables or inline array) as
/// (key path, table).
fn links(network: &Item) -> Vec<(String, &dyn toml_edit::TableLike)> {
    let Some(link) = network.get("link") else {
        return Vec::new();
    };
    if let Some(aot) = link.as_array_of_tables() {
        return aot
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("network.link[{i}]"), t as &dyn toml_edit::TableLike))
            .collect();
    }
    link.as_array()
        .map(|a| {
            a.iter()
                .enumerate()
                .filter_map(|(i, v)| {
                    v.as_inline_table()
                        .map(|t| (format!("network.link[{i}]"), t as &dyn toml_edit::TableLike))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Exactly `name = "admin0"`, `match = "mac:<ADMIN_MAC>"`, `dhcp = true`.
fn is_admin_link(t: &dyn toml_edit::TableLike) -> bool {
    let s = |k: &str| t.get(k).and_then(Item::as_str).map(str::to_string);
    t.len() == 3
        && s("name").as_deref() == Some(ADMIN_LINK)
        && s("match").is_some_and(|m| m.eq_ignore_ascii_case(&admin_mac_ref()))
        && t.get("dhcp").and_then(Item::as_bool) == Some(true)
}

/// Whether a string value names the admin NIC.
fn names_admin(s: &str) -> bool {
    s == ADMIN_LINK || s.eq_ignore_ascii_case(&admin_mac_ref()) || s.eq_ignore_ascii_case(ADMIN_MAC)
}

/// Every string under `item` that names the admin NIC, as (key path, value).
fn walk(item: &Item, path: &str, hits: &mut Vec<(String, String)>) {
    match item {
        Item::None => {}
        Item::Value(v) => walk_value(v, path, hits),
        Item::Table(t) => {
            for (k, it) in t.iter() {
                walk(it, &format!("{path}.{k}"), hits);
            }
        }
        Item::ArrayOfTables(a) => {
            for (i, t) in a.iter().enumerate() {
                for (k, it) in t.iter() {
                    walk(it, &format!("{path}[{i}].{k}"), hits);
                }
            }
        }
    }
}

fn walk_value(v: &Value, path: &str, hits: &mut Vec<(String, String)>) {
    match v {
        Value::String(s) if names_admin(s.value()) => {
            hits.push((path.to_string(), s.value().clone()));
        }
        Value::Array(a) => {
            for (i, e) in a.iter().enumerate() {
                walk_value(e, &format!("{path}[{i}]"), hits);
            }
        }
        Value::InlineTable(t) => {
            for (k, e) in t.iter() {
                walk_value(e, &format!("{path}.{k}"), hits);
            }
        }
        _ => {}
    }
}

/// Add `key` to `[ssh] authorized_keys` (creating either) unless present.
fn add_key(doc: &mut DocumentMut, key: &str) -> Result<()> {
    if doc.get("ssh").is_none() {
        let mut t = Table::new();
        t.decor_mut()
            .set_prefix("\n# qemu-tests: admin_ssh() logs in with this key.\n");
        doc.insert("ssh", Item::Table(t));
    }
    let ssh = doc
        .get_mut("ssh")
        .and_then(Item::as_table_like_mut)
        .ok_or_else(|| Error::unexpected(WHAT, "`ssh` is not a table"))?;
    if ssh.get("authorized_keys").is_none() {
        ssh.insert("authorized_keys", value(Array::new()));
    }
    let keys = ssh
        .get_mut("authorized_keys")
        .and_then(Item::as_array_mut)
        .ok_or_else(|| Error::unexpected(WHAT, "`ssh.authorized_keys` is not an array"))?;
    if !keys.iter().any(|k| k.as_str().map(str::trim) == Some(key)) {
        // On the line layout of the keys before it (one per line or not).
        let prefix =
            keys.iter()
                .last()
                .map(|k| match k.decor().prefix().and_then(|p| p.as_str()) {
                    Some(p) if !p.is_empty() => p.to_string(),
                    _ => " ".to_string(),
                });
        let mut v = Value::from(key);
        if let Some(p) = prefix {
            v.decor_mut().set_prefix(p);
        }
        keys.push_formatted(v);
    }
    Ok(())
}

/// Append the admin NIC's `[[network.link]]` (creating `[network]`).
fn add_link(doc: &mut DocumentMut) -> Result<()> {
    if doc.get("network").is_none() {
        let mut t = Table::new();
        t.set_implicit(true);
        doc.insert("network", Item::Table(t));
    }
    let network = doc
        .get_mut("network")
        .and_then(Item::as_table_like_mut)
        .ok_or_else(|| Error::unexpected(WHAT, "`network` is not a table"))?;
    if network.get("link").is_none() {
        network.insert("link", Item::ArrayOfTables(ArrayOfTables::new()));
    }
    let link = network
        .get_mut("link")
        .ok_or_else(|| Error::unexpected(WHAT, "`network.link` vanished"))?;
    if let Some(aot) = link.as_array_of_tables_mut() {
        let mut t = Table::new();
        t.decor_mut().set_prefix(
            "\n# qemu-tests: the admin NIC (admin_ssh()), QEMU user net with a forward to port 22.\n",
        );
        t.insert("name", value(ADMIN_LINK));
        t.insert("match", value(admin_mac_ref()));
        t.insert("dhcp", value(true));
        aot.push(t);
        return Ok(());
    }
    if let Some(a) = link.as_array_mut() {
        let mut t = InlineTable::new();
        t.insert("name", ADMIN_LINK.into());
        t.insert("match", admin_mac_ref().into());
        t.insert("dhcp", true.into());
        a.push(t);
        return Ok(());
    }
    Err(Error::unexpected(
        WHAT,
        "`network.link` is neither [[network.link]] tables nor an array",
    ))
}

#[cfg(test)]
#[path = "host_toml_tests.rs"]
mod tests;
