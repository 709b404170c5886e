//! Who is acting: a role and an opaque id, taken from a verified token and nothing else.

use std::fmt;

use super::PartyId;

/// The four kinds of caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Buyer,
    Seller,
    Agent,
    Service,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Buyer, Role::Seller, Role::Agent, Role::Service];

    /// The lower-case spelling used in tokens.
    pub fn as_claim(self) -> &'static str {
        match self {
            Role::Buyer => "buyer",
            Role::Seller => "seller",
            Role::Agent => "agent",
            Role::Service => "service",
        }
    }

    pub fn from_claim(claim: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_claim() == claim)
    }

    /// The upper-case spelling used in history and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Buyer => "BUYER",
            Role::Seller => "SELLER",
            Role::Agent => "AGENT",
            Role::Service => "SERVICE",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Actor {
    pub role: Role,
    pub id: String,
}

impl Actor {
    pub fn new(role: Role, id: impl Into<String>) -> Self {
        Self {
            role,
            id: id.into(),
        }
    }

    /// The service itself, applying deadlines.
    pub fn system() -> Self {
        Self::new(Role::Service, "system")
    }

    /// Whether this actor may see an order or dispute between `buyer` and `seller`: the
    /// parties see their own, the platform (agents, services) sees all.
    pub fn may_see(&self, buyer: &PartyId, seller: &PartyId) -> bool {
        match self.role {
            Role::Buyer => buyer.as_str() == self.id,
            Role::Seller => seller.as_str() == self.id,
            Role::Agent | Role::Service => true,
        }
    }
}
