// Build (and optionally serve) the React example: esbuild bundles app.jsx,
// React and the client into dist/app.js.
//
//   node examples/react/build.mjs              # build
//   node examples/react/build.mjs --serve 5173 # build, then serve this folder
//
// Then open http://127.0.0.1:5173/#server=http://127.0.0.1:3000&token=<JWT>
// with an example server running (`cargo run --example axum_server` prints a
// token; its CORS lets this page call it).
import * as esbuild from 'esbuild';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));

const options = {
  entryPoints: [join(HERE, 'app.jsx')],
  bundle: true,
  format: 'esm',
  jsx: 'automatic',
  outdir: join(HERE, 'dist'),
  sourcemap: true,
  define: { 'process.env.NODE_ENV': '"development"' },
  logLevel: 'warning',
};

/** Bundle the example into dist/. */
export async function build() {
  await esbuild.build(options);
}

/**
 * Bundle it and serve this folder on 127.0.0.1:`port` (0: any free port).
 * @returns {Promise<{ url: string, stop: () => Promise<void> }>}
 */
export async function serve(port = 0) {
  const ctx = await esbuild.context(options);
  await ctx.rebuild();
  const { hosts, port: bound } = await ctx.serve({ servedir: HERE, host: '127.0.0.1', port });
  return { url: `http://${hosts[0]}:${bound}`, stop: () => ctx.dispose() };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const at = process.argv.indexOf('--serve');
  if (at < 0) {
    await build();
  } else {
    const { url } = await serve(Number(process.argv[at + 1] ?? 5173));
    console.log(`React example at ${url}/#server=http://127.0.0.1:3000&token=<JWT>`);
  }
}
