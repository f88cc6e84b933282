//! Who a connection, a publish or a request belongs to.

/// An authenticated user as the engine sees it (the server builds it from the token).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UserInfo {
    pub user_id: String,
    pub username: String,
    pub is_admin: bool,
}
