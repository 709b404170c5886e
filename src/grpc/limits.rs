//! Bounds on what callers hold at once: a total across all callers and a share per
//! caller, so one caller at its share leaves room for the others (README, "Limits").

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::domain::Actor;

/// Which bound refused a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The caller holds its share already.
    Caller,
    /// Every slot is taken.
    Total,
}

/// Slots shared by all callers, at most `per_caller` each.
#[derive(Debug, Clone)]
pub struct Slots {
    total: Arc<Semaphore>,
    per_caller: usize,
    held: Arc<Mutex<HashMap<String, usize>>>,
}

impl Slots {
    pub fn new(total: usize, per_caller: usize) -> Self {
        Self {
            total: Arc::new(Semaphore::new(total)),
            per_caller,
            held: Arc::default(),
        }
    }

    /// A slot for `caller` (its role and subject), held until the guard is dropped.
    pub fn caller_slot(&self, caller: &Actor) -> Result<CallerSlot, Full> {
        let name = format!("{}/{}", caller.role.as_str(), caller.id);
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let count = held.entry(name.clone()).or_insert(0);
        if *count >= self.per_caller {
            return Err(Full::Caller);
        }
        *count += 1;
        Ok(CallerSlot {
            held: self.held.clone(),
            name,
        })
    }

    /// One of the total slots, held until the permit is dropped.
    pub fn total_slot(&self) -> Result<OwnedSemaphorePermit, Full> {
        self.total
            .clone()
            .try_acquire_owned()
            .map_err(|_| Full::Total)
    }

    /// A caller's slot and a total one together.
    pub fn slot(&self, caller: &Actor) -> Result<(CallerSlot, OwnedSemaphorePermit), Full> {
        let mine = self.caller_slot(caller)?;
        Ok((mine, self.total_slot()?))
    }
}

/// One of a caller's slots; its count is forgotten when the caller holds none.
#[derive(Debug)]
pub struct CallerSlot {
    held: Arc<Mutex<HashMap<String, usize>>>,
    name: String,
}

impl Drop for CallerSlot {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = held.get_mut(&self.name) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Role;

    #[test]
    fn a_caller_at_its_share_leaves_the_rest_to_others_and_slots_come_back() {
        let slots = Slots::new(3, 2);
        let greedy = Actor::new(Role::Buyer, "greedy");
        let other = Actor::new(Role::Buyer, "other");
        let a = slots.slot(&greedy).unwrap();
        let _b = slots.slot(&greedy).unwrap();
        assert_eq!(slots.slot(&greedy).err(), Some(Full::Caller));
        // The same subject under another role is another caller.
        let _seller = slots.slot(&Actor::new(Role::Seller, "greedy")).unwrap();
        assert_eq!(slots.slot(&other).err(), Some(Full::Total));
        drop(a);
        let _c = slots.slot(&other).unwrap();
        assert_eq!(slots.held.lock().unwrap().get("BUYER/greedy"), Some(&1));
        drop(_b);
        assert_eq!(slots.held.lock().unwrap().get("BUYER/greedy"), None);
    }
}
