// A typed call site for the TypeScript client: openapi-fetch over the types that openapi-typescript
// generates from the served /openapi.json. Never run, only compiled (`tsc --strict`, see
// tsconfig.json) by scripts/api-clients: it breaks when an operation, parameter or schema it uses
// changes shape, and each `@ts-expect-error` proves the types are not `any`.
import createClient from "openapi-fetch";
import type { components, paths } from "o365-sync-api";

type UserDto = components["schemas"]["UserDto"];
type MessageSummaryDto = components["schemas"]["MessageSummaryDto"];

export function client(baseUrl: string, token: string) {
  return createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${token}` } });
}

export async function firstErroredUser(api: ReturnType<typeof client>): Promise<UserDto | undefined> {
  const { data, error } = await api.GET("/v1/users", { params: { query: { status: "error", limit: 50 } } });
  if (error) throw new Error(`${error.status} ${error.title}: ${error.detail}`);
  const next: string | null | undefined = data.next;
  void next;
  return data.items.find((u) => u.error?.scope === "user");
}

export async function recentSubjects(api: ReturnType<typeof client>, email: string): Promise<string[]> {
  const { data, error } = await api.GET("/v1/users/{email}/messages", {
    params: {
      path: { email },
      query: { folder: "inbox", received_since: "2026-01-01T00:00:00Z", include_removed: false, limit: 20 },
    },
  });
  if (error) throw new Error(error.detail);
  return data.items.map((m: MessageSummaryDto) => m.subject ?? "(no subject)");
}

export async function messageBody(api: ReturnType<typeof client>, email: string, id: string): Promise<string | null> {
  const { data } = await api.GET("/v1/users/{email}/messages/{id}", { params: { path: { email, id } } });
  // MessageDto is MessageSummaryDto (allOf) plus an optional body.
  return data ? `${data.folder}: ${data.body?.content ?? ""}` : null;
}

export async function excludeDomain(api: ReturnType<typeof client>, domain: string): Promise<number> {
  const current = await api.GET("/v1/integration/capture-policy");
  if (!current.data) throw new Error("no capture policy");
  const { version, excluded_domains } = current.data;
  const saved = await api.PUT("/v1/integration/capture-policy", {
    params: { header: { "If-Match": `"${version}"` } },
    body: { excluded_domains: [...excluded_domains, domain], retention_days: 365 },
  });
  if (saved.error) throw new Error(`${saved.error.status}: ${saved.error.detail}`);
  return saved.data.version;
}

export async function switchOn(api: ReturnType<typeof client>): Promise<string> {
  const integration = await api.GET("/v1/integration");
  if (!integration.data) throw new Error("no integration");
  await api.PATCH("/v1/integration/settings", {
    body: { use_service_account: true, version: integration.data.settings.version },
  });
  const activated = await api.POST("/v1/integration/connection/activate");
  if (activated.error) throw new Error(activated.error.detail);
  await api.POST("/v1/users/sync", { body: { changes: [{ email: "diego@contoso.com", sync_enabled: true }] } });
  return activated.data.consent_url;
}

export async function auditActions(api: ReturnType<typeof client>): Promise<string[]> {
  const { data } = await api.GET("/v1/audit");
  return (data?.items ?? []).map((e) => `${e.at} ${e.actor} ${e.action} ${e.object} ${JSON.stringify(e.after)}`);
}

// The types are real: each of these must be a compile error.
export async function misuse(api: ReturnType<typeof client>): Promise<void> {
  // @ts-expect-error no such path
  await api.GET("/v1/nope");
  // @ts-expect-error the path parameter is required
  await api.GET("/v1/users/{email}/messages", { params: { path: {} } });
  // @ts-expect-error limit is a number
  await api.GET("/v1/users", { params: { query: { limit: "50" } } });
  // @ts-expect-error role is required
  await api.POST("/v1/users", { body: { email: "a@contoso.com", display_name: "A" } });
  const { data } = await api.GET("/v1/me");
  // @ts-expect-error UserDto has no such field
  void data?.password;
}
