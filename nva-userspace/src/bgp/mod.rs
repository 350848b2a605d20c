//! The BGP speaker: wire codec, finite state machine and per-peer sessions.
//! RIB, best-path selection and policy live elsewhere; they talk to sessions through
//! the channel API of [`session`].

pub mod codec;
