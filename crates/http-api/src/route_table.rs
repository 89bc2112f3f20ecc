//! Every route of the user-management API, listed once. The list is served by a plain axum
//! router built at start, and documented (utoipa's OpenAPI document, from the same handlers'
//! `#[utoipa::path]` definitions) only when someone asks for `/openapi.json`: building the
//! document with the router was a third of user-api's init.

use axum::Router;
use axum::routing::MethodRouter;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::PathItemExt;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::{ApiState, erasure, mail, policy, problem, routes};

#[derive(OpenApi)]
#[openapi(
    info(title = "o365-sync user management API", version = "1.0.0",
        description = "Integration settings, the service-account connection, users, roles, sync switches and statuses."),
    modifiers(&BearerAuth),
    components(schemas(problem::Problem, problem::FieldProblem)),
    tags((name = "integration"), (name = "connection"), (name = "users"), (name = "sync"), (name = "audit"))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The route's path and methods come from its `#[utoipa::path]` definition (cheap: no
/// operation or schema is built). Handlers sharing a path merge into one method router.
fn serve<P, H, T>(router: Router<ApiState>, handler: H) -> Router<ApiState>
where
    P: utoipa::Path,
    H: axum::handler::Handler<T, ApiState>,
    T: 'static,
{
    let methods = P::methods()
        .iter()
        .fold(MethodRouter::new(), |methods, method| {
            methods.on(method.to_method_filter(), handler.clone())
        });
    router.route(&P::path(), methods)
}

macro_rules! route_table {
    ($($module:ident :: $handler:ident),* $(,)?) => {
        /// The routes, as served.
        pub(crate) fn served() -> Router<ApiState> {
            let router = Router::new();
            $(let router = utoipa_axum::paste! {
                serve::<$module::[<__path_ $handler>], _, _>(router, $module::$handler)
            };)*
            router
        }

        /// The same routes, with their OpenAPI document.
        pub(crate) fn documented() -> OpenApiRouter<ApiState> {
            OpenApiRouter::with_openapi(ApiDoc::openapi())
                $(.routes(routes!($module::$handler)))*
        }
    };
}

route_table!(
    routes::get_integration,
    routes::patch_settings,
    policy::get_capture_policy,
    policy::put_capture_policy,
    routes::activate_connection,
    routes::verify_connection,
    routes::delete_connection,
    routes::list_users,
    routes::add_user,
    routes::get_user,
    routes::change_role,
    routes::remove_user,
    mail::list_messages,
    mail::read_message,
    mail::purge_mailbox,
    erasure::erase_person,
    routes::get_me,
    routes::set_primary,
    routes::set_sync,
    routes::sync_now,
    routes::sync_runs,
    routes::audit_log,
);
