//! The named choices of the configuration, parsed while loading: `rpc.serializer`,
//! `rpc.loadBalancer`, `rpc.retryStrategy`, `rpc.tolerantStrategy`.
//!
//! Each is an enum with the original framework's names (`FromStr`, `Display`, `ALL`); the
//! runtime maps them to its implementations.

use std::fmt;
use std::str::FromStr;

/// A name that is not one of a choice's values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{name}` (known: {known})")]
pub struct UnknownChoice {
    /// What was being chosen, e.g. `serializer`.
    pub what: &'static str,
    /// The name given.
    pub name: String,
    /// The names known, comma-separated.
    pub known: String,
}

macro_rules! choice {
    (
        $(#[$meta:meta])*
        $name:ident, $what:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in the documented order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// Every name, as written in the configuration.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            /// The name as written in the configuration.
            pub fn name(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl FromStr for $name {
            type Err = UnknownChoice;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $( $text => Ok($name::$variant), )+
                    _ => Err(UnknownChoice {
                        what: $what,
                        name: s.to_owned(),
                        known: Self::NAMES.join(", "),
                    }),
                }
            }
        }
    };
}

choice! {
    /// `rpc.serializer`: the body format of calls.
    SerializerKind, "serializer" {
        /// `json` (readable, the default).
        #[default]
        Json = "json",
        /// `bincode` (compact).
        Bincode = "bincode",
    }
}

choice! {
    /// `rpc.loadBalancer`: how a consumer picks a node.
    LoadBalancerKind, "load balancer" {
        /// `roundRobin` (the default).
        #[default]
        RoundRobin = "roundRobin",
        /// `random`.
        Random = "random",
        /// `consistentHash`: the same arguments go to the same node.
        ConsistentHash = "consistentHash",
    }
}

choice! {
    /// `rpc.retryStrategy`: how a call is repeated on the same node after a transient failure.
    RetryStrategyKind, "retry strategy" {
        /// `no` retry (the default).
        #[default]
        No = "no",
        /// `fixedInterval`.
        FixedInterval = "fixedInterval",
        /// `exponentialBackoff`.
        ExponentialBackoff = "exponentialBackoff",
    }
}

choice! {
    /// `rpc.tolerantStrategy`: what happens when a call failed on a node for good.
    TolerantStrategyKind, "tolerant strategy" {
        /// `failFast`: return the error (the default).
        #[default]
        FailFast = "failFast",
        /// `failOver`: try the next node.
        FailOver = "failOver",
        /// `failSafe`: log and return the method's default value.
        FailSafe = "failSafe",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_known_ones() {
        for kind in LoadBalancerKind::ALL {
            assert_eq!(kind.name().parse::<LoadBalancerKind>().unwrap(), *kind);
        }
        let err = "xml".parse::<SerializerKind>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown serializer `xml` (known: json, bincode)"
        );
        assert_eq!(
            TolerantStrategyKind::default(),
            TolerantStrategyKind::FailFast
        );
        assert_eq!(
            RetryStrategyKind::NAMES,
            ["no", "fixedInterval", "exponentialBackoff"]
        );
    }
}
