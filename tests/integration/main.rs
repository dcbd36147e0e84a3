//! The engine's integration tests, one binary (each test binary links
//! SeaORM, axum and actix: one link instead of thirteen). Every module is
//! one subject; most run each test on SQLite, Postgres and MariaDB
//! (`per_backend!`), each in a database of its own.

#[macro_use]
mod common;

mod adapters;
mod auth;
mod concurrency;
mod cross_instance;
mod durability;
mod exact_values;
mod faults;
mod fuzz;
mod inspector;
mod materialize;
mod model_wire;
mod protocol;
mod realtime;
mod retention;
mod server;
mod shapes;
mod shutdown;
mod storage;
mod typed_models;
mod writer;
mod ws_limits;

// The server half of the multi-process tests (`common::spawn_child_server`).
child_server_main!();
