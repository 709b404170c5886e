//! Who may call what: one table, deny by default. The role check happens here, before
//! any handler runs; ownership is checked where the order or dispute is loaded.

use tonic::{Code, Status};

use super::error::status;
use crate::domain::{DomainError, Role};

use Role::{Agent, Buyer, Seller, Service};

/// An RPC and the roles that may call it.
pub struct Rule {
    pub rpc: &'static str,
    pub roles: &'static [Role],
}

/// Every RPC of `dispute.v1.DisputeService`. An RPC missing here is refused to everyone.
#[rustfmt::skip]
pub const POLICY: &[Rule] = &[
    Rule { rpc: "RegisterOrder",         roles: &[Service] },
    Rule { rpc: "GetOrder",              roles: &[Buyer, Seller, Agent, Service] },
    Rule { rpc: "OpenDispute",           roles: &[Buyer] },
    Rule { rpc: "CancelDispute",         roles: &[Buyer] },
    Rule { rpc: "CancelReturn",          roles: &[Buyer] },
    Rule { rpc: "ResolveFunds",          roles: &[Seller, Agent] },
    Rule { rpc: "GetDispute",            roles: &[Buyer, Seller, Agent, Service] },
    Rule { rpc: "ListDisputes",          roles: &[Buyer, Seller, Agent, Service] },
    Rule { rpc: "RespondToDispute",      roles: &[Seller] },
    Rule { rpc: "AcceptProposal",        roles: &[Buyer] },
    Rule { rpc: "EscalateDispute",       roles: &[Buyer, Seller] },
    Rule { rpc: "SubmitReturnShipment",  roles: &[Buyer] },
    Rule { rpc: "ConfirmReturnReceived", roles: &[Seller] },
    Rule { rpc: "ExtendProtection",      roles: &[Seller, Agent] },
    Rule { rpc: "ListDisputeEvents",     roles: &[Buyer, Seller, Agent, Service] },
    Rule { rpc: "WatchEvents",           roles: &[Agent, Service] },
    Rule { rpc: "SubmitReplacementShipment",  roles: &[Seller] },
    Rule { rpc: "ConfirmReplacementReceived", roles: &[Buyer] },
    Rule { rpc: "PostDisputeMessage",         roles: &[Buyer, Seller, Agent] },
    Rule { rpc: "GetSellerDisputeStats",      roles: &[Seller, Agent] },
];

/// The RPC's name as the proto spells it, or `None` for a name that is not one of them:
/// only these may become metric labels and span names (anyone can make up a method path).
pub fn known_rpc(rpc: &str) -> Option<&'static str> {
    POLICY
        .iter()
        .find(|rule| rule.rpc == rpc)
        .map(|rule| rule.rpc)
}

/// What metrics and spans call a method that is not one of the service's RPCs.
pub const UNKNOWN_RPC: &str = "unknown";

/// Refuses `role` calling `rpc` unless the table allows it, stating the rule.
pub fn authorize(rpc: &str, role: Role) -> Result<(), Status> {
    // Deny by default: a method with no entry is answered as one that does not exist (a
    // test holds every method of the service to an entry), and never reaches a handler.
    let Some(rule) = POLICY.iter().find(|rule| rule.rpc == rpc) else {
        return Err(status(
            Code::Unimplemented,
            "UNIMPLEMENTED",
            format!("{rpc} is not a method of this service"),
        ));
    };
    if rule.roles.contains(&role) {
        return Ok(());
    }
    if matches!(rpc, "CancelDispute" | "CancelReturn") {
        return Err(DomainError::ONLY_BUYER_CAN_CANCEL.into());
    }
    let allowed: Vec<&str> = rule.roles.iter().map(|r| r.as_claim()).collect();
    Err(status(
        Code::PermissionDenied,
        "ROLE_NOT_ALLOWED",
        format!("{rpc} may be called only by: {}", allowed.join(", ")),
    ))
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use prost_types::FileDescriptorSet;

    use super::*;

    fn proto_rpcs() -> Vec<String> {
        let set = FileDescriptorSet::decode(crate::grpc::FILE_DESCRIPTOR_SET).unwrap();
        set.file
            .iter()
            .filter(|file| file.package() == "dispute.v1")
            .flat_map(|file| &file.service)
            .filter(|service| service.name() == "DisputeService")
            .flat_map(|service| &service.method)
            .map(|method| method.name().to_owned())
            .collect()
    }

    #[test]
    fn every_rpc_of_the_proto_has_exactly_one_policy_entry() {
        let rpcs = proto_rpcs();
        // The proto's RPCs as SPEC §11 names them, written out: a descriptor that lost one
        // (or a policy that did) fails here.
        let expected = [
            "RegisterOrder",
            "GetOrder",
            "OpenDispute",
            "CancelDispute",
            "CancelReturn",
            "ResolveFunds",
            "GetDispute",
            "ListDisputes",
            "RespondToDispute",
            "AcceptProposal",
            "EscalateDispute",
            "SubmitReturnShipment",
            "ConfirmReturnReceived",
            "ExtendProtection",
            "ListDisputeEvents",
            "WatchEvents",
            "SubmitReplacementShipment",
            "ConfirmReplacementReceived",
            "PostDisputeMessage",
            "GetSellerDisputeStats",
        ];
        let mut sorted = rpcs.clone();
        sorted.sort();
        let mut expected = expected.map(str::to_owned).to_vec();
        expected.sort();
        assert_eq!(sorted, expected);
        assert_eq!(POLICY.len(), expected.len());
        for rpc in &rpcs {
            let entries = POLICY.iter().filter(|rule| rule.rpc == rpc).count();
            assert_eq!(entries, 1, "{rpc} has {entries} policy entries");
        }
        for rule in POLICY {
            assert!(
                rpcs.iter().any(|rpc| rpc == rule.rpc),
                "{} is not in the proto",
                rule.rpc
            );
        }
    }

    #[test]
    fn an_rpc_without_an_entry_is_denied_to_every_role() {
        for role in Role::ALL {
            assert_eq!(
                authorize("DropAllTables", role).unwrap_err().code(),
                Code::Unimplemented
            );
        }
    }

    #[test]
    fn only_buyers_reach_the_cancel_rpcs_and_others_are_told_the_rule() {
        for rpc in ["CancelDispute", "CancelReturn"] {
            assert!(authorize(rpc, Buyer).is_ok());
            for role in [Seller, Agent, Service] {
                let denied = authorize(rpc, role).unwrap_err();
                assert_eq!(denied.code(), Code::PermissionDenied);
                assert!(denied.message().contains("only the buyer can cancel"));
            }
        }
    }
}
