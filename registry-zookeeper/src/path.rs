//! Keys as znode paths, and where registry nodes sit in the tree.
//!
//! Registry data lives exactly two levels below the root: `root/service/host:port`. A listing
//! or a watch reads no deeper, and only names that look like `host:port` at the node level,
//! so junk written elsewhere in the tree (a chain thousands of levels deep, thousands of
//! children) costs at most one `getChildren` per directory it sits in and is never read.

use registry_core::KeySpace;

/// The znode path of a key or prefix (no trailing slash; `/` for the root).
pub(crate) fn path(key: &str) -> &str {
    let trimmed = key.trim_end_matches('/');
    if trimmed.is_empty() {
        "/"
    } else {
        trimmed
    }
}

/// The parent znode of a key, if it is not at the top.
pub(crate) fn parent(key: &str) -> Option<&str> {
    let p = path(key);
    match p.rfind('/') {
        Some(0) | None => None,
        Some(i) => Some(&p[..i]),
    }
}

/// `dir/child`, without doubling the slash under `/`.
pub(crate) fn join(dir: &str, child: &str) -> String {
    if dir == "/" {
        format!("/{child}")
    } else {
        format!("{dir}/{child}")
    }
}

/// How many levels below `prefix` node keys sit: 2 under the root (`service/address`), 1 under
/// a service directory, 0 when `prefix` is itself a node key or lies outside the root.
pub(crate) fn node_depth(keys: &KeySpace, prefix: &str) -> usize {
    let Some(below) = prefix.strip_prefix(keys.root()).or_else(|| {
        // The root itself, written without its trailing slash.
        (path(prefix) == path(keys.root())).then_some("")
    }) else {
        return 0;
    };
    2usize.saturating_sub(below.split('/').filter(|s| !s.is_empty()).count())
}

/// Whether `key` is a node key `depth` levels below `prefix`, with a `host:port` name.
pub(crate) fn is_node_key(prefix: &str, depth: usize, key: &str) -> bool {
    let base = path(prefix);
    let below = if base == "/" {
        key.strip_prefix('/')
    } else {
        key.strip_prefix(base)
            .and_then(|rest| rest.strip_prefix('/'))
    };
    let Some(below) = below else {
        return false;
    };
    let segments: Vec<&str> = below.split('/').filter(|s| !s.is_empty()).collect();
    if segments.len() != depth {
        return false;
    }
    let Some((name, _)) = segments.split_last() else {
        return false;
    };
    // The directory may lie above the prefix (a prefix that is a service directory).
    key.trim_end_matches('/')
        .strip_suffix(name)
        .is_some_and(|dir| is_entry(path(dir), name))
}

/// Whether znode `name` in directory `dir` is registry data: a node's `host:port`, or, in
/// the overrides tree (`<root>~overrides`), a service's record.
pub(crate) fn is_entry(dir: &str, name: &str) -> bool {
    is_address(name)
        || dir
            .rsplit('/')
            .next()
            .is_some_and(|d| d == registry_core::overrides::OVERRIDES_NAME)
}

/// Whether a znode name can be a node's `host:port` (the value decides the rest).
pub(crate) fn is_address(name: &str) -> bool {
    name.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_of_keys_and_prefixes() {
        assert_eq!(path("/rpc/"), "/rpc");
        assert_eq!(path("/rpc/a:1.0/h:1"), "/rpc/a:1.0/h:1");
        assert_eq!(path("/"), "/");
        assert_eq!(parent("/rpc/a:1.0/h:1"), Some("/rpc/a:1.0"));
        assert_eq!(parent("/rpc"), None);
        assert_eq!(join("/", "rpc"), "/rpc");
        assert_eq!(join("/rpc", "a:1.0"), "/rpc/a:1.0");
    }

    #[test]
    fn nodes_sit_two_levels_below_the_root() {
        let keys = KeySpace::new("/rpc/");
        assert_eq!(node_depth(&keys, "/rpc/"), 2);
        assert_eq!(node_depth(&keys, "/rpc"), 2);
        assert_eq!(node_depth(&keys, "/rpc/a:1.0/"), 1);
        assert_eq!(node_depth(&keys, "/rpc/a:1.0/h:1"), 0);
        assert_eq!(node_depth(&keys, "/elsewhere/"), 0);
        assert_eq!(node_depth(&KeySpace::new("/"), "/a:1.0/"), 1);

        assert!(is_node_key("/rpc/a:1.0/", 1, "/rpc/a:1.0/10.0.0.1:80"));
        assert!(is_node_key("/rpc/", 2, "/rpc/a:1.0/[::1]:80"));
        assert!(is_node_key("/rpc/", 2, "/rpc/a:1.0/::1:80"));
        assert!(!is_node_key("/rpc/a:1.0/", 1, "/rpc/a:1.0/deep/d/h:1"));
        assert!(!is_node_key("/rpc/a:1.0/", 1, "/rpc/a:1.0/deep"));
        assert!(!is_node_key("/rpc/a:1.0/", 1, "/rpc/a:1.0/h:99999"));
        assert!(!is_node_key("/rpc/", 2, "/rpc/a:1.0"));
        assert!(!is_node_key("/rpc/", 2, "/rpcx/h:1"));
        assert!(!is_node_key("/rpc/a:1.0/", 1, "/rpc/a:1.01/h:1"));
        assert!(!is_node_key("/rpc/a:1.0/", 1, "/rpc/a:1.0/~overrides"));
        assert!(is_node_key("/rpc/~overrides/", 1, "/rpc/~overrides/a:1.0"));
        assert!(is_node_key("/rpc/", 2, "/rpc/~overrides/a:1.0:g"));
        assert!(!is_node_key("/rpc/", 2, "/rpc/a:1.0/b:1.0"));
    }
}
