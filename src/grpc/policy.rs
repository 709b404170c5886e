//! Who may call what: one table, deny by default. The role check happens here, before
//! any handler runs; ownership is checked where the order or dispute is loaded.

use tonic::{Code, Status};

use super::error::status;
use crate::domain::{DomainError, Role};

use Role::{Agent, Buyer, Seller, Service};

/// Declares [`Rpc`] with one variant per name, [`Rpc::ALL`] and [`Rpc::name`], from one list.
macro_rules! rpcs {
    ($($rpc:ident),* $(,)?) => {
        /// The RPCs of `dispute.v1.DisputeService`, as the proto names them. Only these
        /// reach a handler, become metric labels or span names; any other method path is
        /// refused.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Rpc {
            $($rpc),*
        }

        impl Rpc {
            pub const ALL: &'static [Rpc] = &[$(Rpc::$rpc),*];

            /// The method's name in the proto (the last segment of its path).
            pub fn name(self) -> &'static str {
                match self {
                    $(Rpc::$rpc => stringify!($rpc)),*
                }
            }
        }
    };
}

rpcs!(
    RegisterOrder,
    GetOrder,
    OpenDispute,
    CancelDispute,
    CancelReturn,
    ResolveFunds,
    GetDispute,
    ListDisputes,
    RespondToDispute,
    AcceptProposal,
    EscalateDispute,
    SubmitReturnShipment,
    ConfirmReturnReceived,
    ExtendProtection,
    ListDisputeEvents,
    WatchEvents,
    SubmitReplacementShipment,
    ConfirmReplacementReceived,
    PostDisputeMessage,
    GetSellerDisputeStats,
    AddInternalNote,
);

use Rpc::*;

impl Rpc {
    /// The RPC a method name stands for; `None` for a name that is not one of them.
    pub fn from_name(name: &str) -> Option<Rpc> {
        Self::ALL.iter().copied().find(|rpc| rpc.name() == name)
    }

    /// The policy: who may call it. One arm per RPC, so a new RPC does not compile until
    /// it has its row.
    #[rustfmt::skip]
    pub fn roles(self) -> &'static [Role] {
        match self {
            RegisterOrder              => &[Service],
            GetOrder                   => &[Buyer, Seller, Agent, Service],
            OpenDispute                => &[Buyer],
            CancelDispute              => &[Buyer],
            CancelReturn               => &[Buyer],
            ResolveFunds               => &[Seller, Agent],
            GetDispute                 => &[Buyer, Seller, Agent, Service],
            ListDisputes               => &[Buyer, Seller, Agent, Service],
            RespondToDispute           => &[Seller],
            AcceptProposal             => &[Buyer],
            EscalateDispute            => &[Buyer, Seller],
            SubmitReturnShipment       => &[Buyer],
            ConfirmReturnReceived      => &[Seller],
            ExtendProtection           => &[Seller, Agent],
            ListDisputeEvents          => &[Buyer, Seller, Agent, Service],
            WatchEvents                => &[Agent, Service],
            SubmitReplacementShipment  => &[Seller],
            ConfirmReplacementReceived => &[Buyer],
            PostDisputeMessage         => &[Buyer, Seller, Agent],
            GetSellerDisputeStats      => &[Seller, Agent],
            AddInternalNote            => &[Agent],
        }
    }
}

/// What metrics and spans call a method that is not one of the service's RPCs.
pub const UNKNOWN_RPC: &str = "unknown";

/// Refuses a method that is not one of the service's RPCs.
pub fn unknown(method: &str) -> Status {
    status(
        Code::Unimplemented,
        "UNIMPLEMENTED",
        format!("{method} is not a method of this service"),
    )
}

/// Refuses `role` calling `rpc` unless the policy allows it, stating the rule.
pub fn authorize(rpc: Rpc, role: Role) -> Result<(), Status> {
    let roles = rpc.roles();
    if roles.contains(&role) {
        return Ok(());
    }
    if matches!(rpc, CancelDispute | CancelReturn) {
        return Err(DomainError::ONLY_BUYER_CAN_CANCEL.into());
    }
    let allowed: Vec<&str> = roles.iter().map(|r| r.as_claim()).collect();
    Err(status(
        Code::PermissionDenied,
        "ROLE_NOT_ALLOWED",
        format!(
            "{} may be called only by: {}",
            rpc.name(),
            allowed.join(", ")
        ),
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
    fn the_rpcs_are_exactly_the_protos() {
        let mut rpcs = proto_rpcs();
        // The names clients are written against (the proto; README, "What it does"),
        // written out: a descriptor that lost one (or an enum that did) fails here.
        let mut expected = [
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
            "AddInternalNote",
        ]
        .map(str::to_owned)
        .to_vec();
        rpcs.sort();
        expected.sort();
        assert_eq!(rpcs, expected);
        let mut ours: Vec<String> = Rpc::ALL.iter().map(|rpc| rpc.name().to_owned()).collect();
        ours.sort();
        ours.dedup();
        assert_eq!(ours, expected);
        for &rpc in Rpc::ALL {
            assert_eq!(Rpc::from_name(rpc.name()), Some(rpc));
            assert!(!rpc.roles().is_empty(), "{rpc:?} has no caller");
        }
    }

    #[test]
    fn a_name_that_is_not_an_rpc_is_none() {
        for name in [
            "DropAllTables",
            "getorder",
            "GetOrder ",
            "",
            "RegisterOrder/x",
        ] {
            assert_eq!(Rpc::from_name(name), None, "{name:?}");
        }
        assert_eq!(unknown("DropAllTables").code(), Code::Unimplemented);
    }

    #[test]
    fn only_buyers_reach_the_cancel_rpcs_and_others_are_told_the_rule() {
        for rpc in [CancelDispute, CancelReturn] {
            assert!(authorize(rpc, Buyer).is_ok());
            for role in [Seller, Agent, Service] {
                let denied = authorize(rpc, role).unwrap_err();
                assert_eq!(denied.code(), Code::PermissionDenied);
                assert!(denied.message().contains("only the buyer can cancel"));
            }
        }
    }
}
