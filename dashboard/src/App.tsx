import { Layout } from "@/components/layout";
import { useToken } from "@/lib/auth";
import { useLocation } from "@/lib/router";
import { ApiKeysPage } from "@/pages/api-keys";
import { LivePage } from "@/pages/live";
import { LogDetailPage } from "@/pages/log-detail";
import { LogsPage } from "@/pages/logs";
import { ModelsPage } from "@/pages/models";
import { NotFoundPage } from "@/pages/not-found";
import { OverviewPage } from "@/pages/overview";
import { PlaygroundPage } from "@/pages/playground";
import { ProvidersPage } from "@/pages/providers";
import { SignInPage } from "@/pages/sign-in";

function Page({ pathname }: { pathname: string }) {
  const path = pathname.replace(/\/+$/, "") || "/";
  if (path === "/") return <OverviewPage />;
  if (path === "/live") return <LivePage />;
  if (path === "/providers") return <ProvidersPage />;
  if (path === "/models") return <ModelsPage />;
  if (path === "/keys") return <ApiKeysPage />;
  if (path === "/logs") return <LogsPage />;
  if (path === "/playground") return <PlaygroundPage />;
  const m = /^\/logs\/([^/]+)$/.exec(path);
  if (m) return <LogDetailPage id={decodeURIComponent(m[1]!)} />;
  return <NotFoundPage />;
}

export function App() {
  const token = useToken();
  const { pathname } = useLocation();
  if (!token) return <SignInPage />;
  return (
    <Layout>
      <Page key={pathname.startsWith("/logs/") ? "detail" : pathname} pathname={pathname} />
    </Layout>
  );
}
