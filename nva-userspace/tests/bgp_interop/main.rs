//! Interop of nva's BGP speaker with real daemons (no mocks): BIRD 2 and GoBGP in one
//! network namespace, our speaker in another, joined by a veth. Root only (and the
//! daemons installed); skipped otherwise. Uses only nva's public API.

mod bird;
mod env;
mod gobgp;
