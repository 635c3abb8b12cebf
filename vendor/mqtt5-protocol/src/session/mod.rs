pub mod flow_control;
pub mod limits;
pub mod queue;
pub mod subscription;
pub mod topic_alias;

pub use flow_control::{FlowControlConfig, FlowControlStats};
pub use limits::{ExpiringMessage, LimitsConfig, LimitsManager};
pub use queue::{MessageQueue, QueueResult, QueueStats, QueuedMessage};
pub use subscription::{Subscription, SubscriptionManager};
pub use topic_alias::TopicAliasManager;
