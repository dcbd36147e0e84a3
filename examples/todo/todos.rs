//! The app's own `todos` table: the synced todos as rows it can query and
//! join with plain SeaORM. better-sync writes it (materialization); the app
//! creates it and reads it.

// SeaORM's derives make public items the example does not export.
#![allow(unreachable_pub)]

use better_sync::sea_orm::entity::prelude::*;

/// One todo. Clients send and receive every field but `tenant_id`, which
/// the server fills from the verified token.
#[derive(
    Clone,
    Debug,
    PartialEq,
    DeriveEntityModel,
    serde::Serialize,
    serde::Deserialize,
    better_sync::JsonSchema,
)]
#[sea_orm(table_name = "todos")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub tenant_id: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub title: String,
    pub done: bool,
    /// The list the todo is in (a `list` row); the page puts every todo in
    /// one, and shares lists with their members.
    pub list_id: Option<String>,
    /// When the todo was made (ISO 8601, the page's clock): the list's order.
    pub created_at: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
