//! The binary's faces: the command line, a running server and its live policy, the admin
//! listener with its status page, and `explain`, which answers without sending anything.

pub mod admin;
pub mod cli;
pub mod explain;
pub mod flask_routes;
pub mod health;
pub mod reload;
pub mod report;
mod route_name;
pub mod server;
pub mod status_page;
