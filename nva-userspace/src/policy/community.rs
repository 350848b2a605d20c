//! Community values and patterns as written in the config: `65000:100` (RFC 1997),
//! `1:2:3` (RFC 8092 large), the well-known names, and `*` as a wildcard part in
//! matches and removals (`65000:*`).

use std::fmt;
use std::str::FromStr;

use crate::bgp::codec::{Community, LargeCommunity, PathAttrs};

/// Well-known communities by name (RFC 1997, RFC 7999, RFC 8326).
const WELL_KNOWN: &[(&str, Community)] = &[
    ("no-export", Community::NO_EXPORT),
    ("no-advertise", Community::NO_ADVERTISE),
    ("no-export-subconfed", Community::NO_EXPORT_SUBCONFED),
    ("graceful-shutdown", Community::GRACEFUL_SHUTDOWN),
    ("blackhole", Community::BLACKHOLE),
];

/// One community or a pattern of them; `None` parts are wildcards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommunityPattern {
    Standard {
        asn: Option<u16>,
        value: Option<u16>,
    },
    Large {
        global: Option<u32>,
        local1: Option<u32>,
        local2: Option<u32>,
    },
}

impl CommunityPattern {
    /// No wildcard: a single value that can be added to a route.
    pub fn is_exact(&self) -> bool {
        match *self {
            CommunityPattern::Standard { asn, value } => asn.is_some() && value.is_some(),
            CommunityPattern::Large {
                global,
                local1,
                local2,
            } => global.is_some() && local1.is_some() && local2.is_some(),
        }
    }

    pub fn matches_standard(&self, c: Community) -> bool {
        match *self {
            CommunityPattern::Standard { asn, value } => {
                asn.is_none_or(|a| a as u32 == c.0 >> 16)
                    && value.is_none_or(|v| v as u32 == c.0 & 0xffff)
            }
            CommunityPattern::Large { .. } => false,
        }
    }

    pub fn matches_large(&self, c: &LargeCommunity) -> bool {
        match *self {
            CommunityPattern::Large {
                global,
                local1,
                local2,
            } => {
                global.is_none_or(|g| g == c.global)
                    && local1.is_none_or(|l| l == c.local1)
                    && local2.is_none_or(|l| l == c.local2)
            }
            CommunityPattern::Standard { .. } => false,
        }
    }

    /// Whether the route carries a community matching the pattern.
    pub fn matches(&self, attrs: &PathAttrs) -> bool {
        match self {
            CommunityPattern::Standard { .. } => {
                attrs.communities.iter().any(|&c| self.matches_standard(c))
            }
            CommunityPattern::Large { .. } => attrs
                .large_communities
                .iter()
                .any(|c| self.matches_large(c)),
        }
    }

    /// Removes every matching community from the route.
    pub fn remove_from(&self, attrs: &mut PathAttrs) {
        match self {
            CommunityPattern::Standard { .. } => {
                attrs.communities.retain(|&c| !self.matches_standard(c))
            }
            CommunityPattern::Large { .. } => {
                attrs.large_communities.retain(|c| !self.matches_large(c))
            }
        }
    }

    /// Adds the community (if exact and not already present).
    pub fn add_to(&self, attrs: &mut PathAttrs) {
        match *self {
            CommunityPattern::Standard {
                asn: Some(a),
                value: Some(v),
            } => {
                let c = Community::new(a, v);
                if !attrs.communities.contains(&c) {
                    attrs.communities.push(c);
                }
            }
            CommunityPattern::Large {
                global: Some(global),
                local1: Some(local1),
                local2: Some(local2),
            } => {
                let c = LargeCommunity {
                    global,
                    local1,
                    local2,
                };
                if !attrs.large_communities.contains(&c) {
                    attrs.large_communities.push(c);
                }
            }
            _ => {}
        }
    }
}

fn part<T: FromStr>(s: &str) -> Result<Option<T>, ()> {
    if s == "*" {
        Ok(None)
    } else {
        s.parse().map(Some).map_err(|_| ())
    }
}

impl FromStr for CommunityPattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(&(_, c)) = WELL_KNOWN.iter().find(|(name, _)| *name == s) {
            return Ok(CommunityPattern::Standard {
                asn: Some((c.0 >> 16) as u16),
                value: Some(c.0 as u16),
            });
        }
        let parts: Vec<&str> = s.split(':').collect();
        let bad = || {
            format!(
                "{s:?} is not a community (\"65000:100\", \"65000:*\", large \"1:2:3\", or one of {})",
                WELL_KNOWN
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        match parts[..] {
            [a, v] => Ok(CommunityPattern::Standard {
                asn: part(a).map_err(|_| bad())?,
                value: part(v).map_err(|_| bad())?,
            }),
            [g, l1, l2] => Ok(CommunityPattern::Large {
                global: part(g).map_err(|_| bad())?,
                local1: part(l1).map_err(|_| bad())?,
                local2: part(l2).map_err(|_| bad())?,
            }),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for CommunityPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn p<T: fmt::Display>(v: Option<T>) -> String {
            v.map_or_else(|| "*".to_string(), |v| v.to_string())
        }
        match *self {
            CommunityPattern::Standard { asn, value } => write!(f, "{}:{}", p(asn), p(value)),
            CommunityPattern::Large {
                global,
                local1,
                local2,
            } => write!(f, "{}:{}:{}", p(global), p(local1), p(local2)),
        }
    }
}
