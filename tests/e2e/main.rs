//! End-to-end tests: each starts the real `roomcast` binary (built by cargo for this
//! target) on a free loopback port and talks to it over real sockets.

// A test binary has no public API; `pub` in the support module is for the test modules.
#![allow(unreachable_pub)]

mod support;

mod auth;
mod autobahn;
mod calls;
mod chat;
mod chat_admin;
mod chat_paging;
mod cluster;
mod cognito;
mod cql;
mod deploy;
mod durability;
mod fanout;
mod input;
mod keys;
mod limits;
mod openapi;
mod ops;
mod presence;
mod prometheus;
mod rooms;
mod seq;
