import { fileURLToPath } from "node:url";
import tailwindcss from "@tailwindcss/vite";
import react from "@vitejs/plugin-react";
import { defineConfig } from "vitest/config";

// `npm run dev` proxies gRPC-web calls to a control plane on
// LLMGW_SERVER (default http://127.0.0.1:9090).
const server = process.env.LLMGW_SERVER ?? "http://127.0.0.1:9090";

export default defineConfig({
  plugins: [react(), tailwindcss()],
  resolve: {
    alias: { "@": fileURLToPath(new URL("./src", import.meta.url)) },
  },
  server: {
    proxy: { "/llmgw.v1.Admin": { target: server, changeOrigin: true } },
  },
  build: {
    // Vite prints every output file with its size and gzip size.
    reportCompressedSize: true,
    chunkSizeWarningLimit: 700,
    sourcemap: false,
  },
  test: {
    include: ["src/**/*.test.ts"],
    environment: "node",
  },
});
