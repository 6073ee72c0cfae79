//! The search: the solution tree the runner owns, the policy that grows it, and the ensembles
//! it builds from it.
//!
//! Every iteration is a node with a parent (or none) and an operation: draft, improve, debug or
//! ensemble. A [`Policy`] picks the next operation and parent from the tree, the runtimes and
//! the time left; agents (LLM or built-in) only carry operations out, and ensembles are made by
//! the runner itself from the validation predictions it holds ([`ensemble::select`]). Nothing
//! here runs scripts or talks to agents.

pub mod ensemble;
mod greedy;
mod tree;

pub use ensemble::{Blend, Candidate, blend_score, select};
pub use greedy::Greedy;
pub use tree::{Decision, Node, Operation, Policy, Situation, debug_depth, lag, new_to_ensembles, render};
