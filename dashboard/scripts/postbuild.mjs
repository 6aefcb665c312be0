// After `vite build`: writes .br and .gz beside each text asset in dist/
// (the control plane serves them to browsers that accept them) and prints
// the bundle size, raw and compressed, as a table.
import { readdirSync, readFileSync, statSync, writeFileSync, rmSync } from "node:fs";
import { join, relative } from "node:path";
import { brotliCompressSync, constants, gzipSync } from "node:zlib";

const dist = new URL("../dist/", import.meta.url).pathname;
const compressible = /\.(js|mjs|css|html|svg|json|txt|map)$/;

function walk(dir) {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
}

const kb = (n) => `${(n / 1024).toFixed(1)} kB`.padStart(10);
const rows = [];
let total = { raw: 0, gz: 0, br: 0 };
for (const file of walk(dist)) {
  if (file.endsWith(".gz") || file.endsWith(".br")) {
    rmSync(file);
    continue;
  }
  const data = readFileSync(file);
  let gz = data.length;
  let br = data.length;
  if (compressible.test(file) && data.length > 512) {
    const g = gzipSync(data, { level: 9 });
    const b = brotliCompressSync(data, {
      params: { [constants.BROTLI_PARAM_QUALITY]: 11, [constants.BROTLI_PARAM_SIZE_HINT]: data.length },
    });
    writeFileSync(`${file}.gz`, g);
    writeFileSync(`${file}.br`, b);
    gz = g.length;
    br = b.length;
  }
  rows.push([relative(dist, file), data.length, gz, br]);
  total = { raw: total.raw + data.length, gz: total.gz + gz, br: total.br + br };
}
rows.sort((a, b) => b[1] - a[1]);
console.log("\nbundle size (dist/):");
console.log(`${"file".padEnd(56)}${"raw".padStart(10)}${"gzip".padStart(10)}${"brotli".padStart(10)}`);
for (const [name, raw, gz, br] of rows) {
  console.log(`${name.padEnd(56)}${kb(raw)}${kb(gz)}${kb(br)}`);
}
console.log(`${"total".padEnd(56)}${kb(total.raw)}${kb(total.gz)}${kb(total.br)}\n`);
