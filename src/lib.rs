//! Event ingestion for a real-time recommender: validate an interaction, update the user's
//! short-term context in Redis at once, hand the event durably to a background writer that
//! stores it for good in PostgreSQL. See README.md, and docs/ARCHITECTURE.md for the contract.

pub mod api;
pub mod catalogue;
pub mod cli;
pub mod config;
pub mod context;
pub mod db;
pub mod evaluate;
pub mod event;
pub mod handoff;
pub mod health;
pub mod ingest;
pub mod rerank;
pub mod retry;
pub mod rfc3339;
pub mod secret;
pub mod seed_catalog;
pub mod server;
pub mod startup;
pub mod telemetry;
pub mod verify;
pub mod writer;
