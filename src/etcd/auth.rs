//! The Auth service, as etcd 3.4 answers with authentication disabled. T4 has no user or role
//! store yet (a later issue), so its auth state is a fresh etcd's, for good: disabled, no users, no
//! roles. Every answer follows from that state as etcd's would (Authenticate: not enabled, so
//! clients that send credentials carry on without a token; lookups: not found; lists: empty),
//! except adding a user or role, which would need the store: those answer `Unimplemented` saying so.

use tonic::{Request, Response, Status};

use super::Services;
use super::status::to_status;
use crate::error::Error;
use crate::proto::etcdserverpb::auth_server::Auth;
use crate::proto::etcdserverpb::{
    AuthDisableRequest, AuthDisableResponse, AuthEnableRequest, AuthEnableResponse, AuthRoleAddRequest,
    AuthRoleAddResponse, AuthRoleDeleteRequest, AuthRoleDeleteResponse, AuthRoleGetRequest, AuthRoleGetResponse,
    AuthRoleGrantPermissionRequest, AuthRoleGrantPermissionResponse, AuthRoleListRequest, AuthRoleListResponse,
    AuthRoleRevokePermissionRequest, AuthRoleRevokePermissionResponse, AuthStatusRequest, AuthStatusResponse,
    AuthUserAddRequest, AuthUserAddResponse, AuthUserChangePasswordRequest, AuthUserChangePasswordResponse,
    AuthUserDeleteRequest, AuthUserDeleteResponse, AuthUserGetRequest, AuthUserGetResponse, AuthUserGrantRoleRequest,
    AuthUserGrantRoleResponse, AuthUserListRequest, AuthUserListResponse, AuthUserRevokeRoleRequest,
    AuthUserRevokeRoleResponse, AuthenticateRequest, AuthenticateResponse,
};

/// The auth store's revision: etcd starts a new store at 1 and counts every user or role change,
/// and T4's never changes.
const AUTH_REVISION: u64 = 1;

/// What adding users or roles needs, named in their `Unimplemented` answers.
const NO_AUTH_STORE: &str = "T4 has no user or role store yet (authentication stays disabled)";

fn refuse<T>(error: Error) -> Result<Response<T>, Status> {
    Err(to_status(error))
}

#[tonic::async_trait]
impl Auth for Services {
    async fn auth_enable(&self, _request: Request<AuthEnableRequest>) -> Result<Response<AuthEnableResponse>, Status> {
        refuse(Error::RootUserNotExist)
    }

    async fn auth_disable(
        &self,
        _request: Request<AuthDisableRequest>,
    ) -> Result<Response<AuthDisableResponse>, Status> {
        Ok(Response::new(AuthDisableResponse { header: self.current_header()? }))
    }

    /// etcd 3.5's call (3.4 does not know it): the state it reports is the one 3.4 has too.
    async fn auth_status(&self, _request: Request<AuthStatusRequest>) -> Result<Response<AuthStatusResponse>, Status> {
        Ok(Response::new(AuthStatusResponse {
            header: self.current_header()?,
            enabled: false,
            auth_revision: AUTH_REVISION,
        }))
    }

    async fn authenticate(
        &self,
        _request: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        refuse(Error::AuthNotEnabled)
    }

    async fn user_add(&self, request: Request<AuthUserAddRequest>) -> Result<Response<AuthUserAddResponse>, Status> {
        if request.get_ref().name.is_empty() {
            return refuse(Error::UserEmpty);
        }
        refuse(Error::Unimplemented(format!("UserAdd cannot add a user: {NO_AUTH_STORE}")))
    }

    async fn user_get(&self, _request: Request<AuthUserGetRequest>) -> Result<Response<AuthUserGetResponse>, Status> {
        refuse(Error::UserNotFound)
    }

    async fn user_list(
        &self,
        _request: Request<AuthUserListRequest>,
    ) -> Result<Response<AuthUserListResponse>, Status> {
        Ok(Response::new(AuthUserListResponse { header: self.current_header()?, users: Vec::new() }))
    }

    async fn user_delete(
        &self,
        _request: Request<AuthUserDeleteRequest>,
    ) -> Result<Response<AuthUserDeleteResponse>, Status> {
        refuse(Error::UserNotFound)
    }

    async fn user_change_password(
        &self,
        _request: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        refuse(Error::UserNotFound)
    }

    async fn user_grant_role(
        &self,
        _request: Request<AuthUserGrantRoleRequest>,
    ) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        refuse(Error::UserNotFound)
    }

    async fn user_revoke_role(
        &self,
        _request: Request<AuthUserRevokeRoleRequest>,
    ) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        refuse(Error::UserNotFound)
    }

    async fn role_add(&self, request: Request<AuthRoleAddRequest>) -> Result<Response<AuthRoleAddResponse>, Status> {
        if request.get_ref().name.is_empty() {
            return refuse(Error::RoleEmpty);
        }
        refuse(Error::Unimplemented(format!("RoleAdd cannot add a role: {NO_AUTH_STORE}")))
    }

    async fn role_get(&self, _request: Request<AuthRoleGetRequest>) -> Result<Response<AuthRoleGetResponse>, Status> {
        refuse(Error::RoleNotFound)
    }

    async fn role_list(
        &self,
        _request: Request<AuthRoleListRequest>,
    ) -> Result<Response<AuthRoleListResponse>, Status> {
        Ok(Response::new(AuthRoleListResponse { header: self.current_header()?, roles: Vec::new() }))
    }

    async fn role_delete(
        &self,
        _request: Request<AuthRoleDeleteRequest>,
    ) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        refuse(Error::RoleNotFound)
    }

    async fn role_grant_permission(
        &self,
        _request: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        refuse(Error::RoleNotFound)
    }

    async fn role_revoke_permission(
        &self,
        _request: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        refuse(Error::RoleNotFound)
    }
}
