import { dashboardScript } from "./dashboard-script.ts";

/**
 * The dashboard's one page, served by the package itself: no CDN, no
 * framework, nothing fetched but the page's own `/api/` (its
 * Content-Security-Policy says so), so it works with no internet. The
 * charts are SVG drawn by the script from the machines' JSON.
 */
export const dashboardPage = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>jetstate dashboard</title>
<style>
  :root { --fg:#1d2329; --muted:#68737d; --line:#d5dbe1; --bg:#f6f8fa; --lit:#ffd75e; --ok:#2f9e44; --bad:#d9480f; --edge:#9aa5b1; --fired:#1c7ed6; }
  * { box-sizing: border-box; }
  body { margin:0; font:14px/1.4 system-ui, sans-serif; color:var(--fg); background:var(--bg); }
  header { display:flex; gap:16px; align-items:center; padding:10px 16px; background:#fff; border-bottom:1px solid var(--line); flex-wrap:wrap; }
  header h1 { font-size:16px; margin:0; }
  main { padding:12px 16px; display:grid; gap:12px; grid-template-columns: minmax(0,1fr) minmax(0,1fr); }
  section { background:#fff; border:1px solid var(--line); border-radius:6px; padding:10px 12px; min-width:0; }
  section.wide { grid-column: 1 / -1; }
  h2 { font-size:14px; margin:0 0 8px; }
  table { border-collapse:collapse; width:100%; font-size:13px; }
  th, td { text-align:left; padding:3px 6px; border-bottom:1px solid var(--line); white-space:nowrap; }
  tr.job { cursor:pointer; } tr.job:hover { background:#eef3f8; } tr.selected { background:#e7f0ff; }
  .muted { color:var(--muted); }
  .status-succeeded { color:var(--ok); font-weight:600; } .status-failed { color:var(--bad); font-weight:600; }
  button { font:inherit; padding:3px 10px; border:1px solid var(--line); border-radius:4px; background:#fff; cursor:pointer; }
  button:disabled { opacity:.5; cursor:default; }
  button.danger { border-color:var(--bad); color:var(--bad); }
  #error { color:var(--bad); }
  .charts { display:grid; gap:12px; grid-template-columns: minmax(0,1fr); }
  svg { width:100%; height:auto; background:#fbfcfd; border:1px solid var(--line); border-radius:4px; }
  svg rect.state { fill:#fff; stroke:#7b8794; stroke-width:1.2; }
  svg rect.state[data-active="true"] { fill:var(--lit); stroke:#b08800; stroke-width:2; }
  svg g.compound > rect.state[data-active="true"] { fill:#fff6d6; }
  svg rect.final { stroke-dasharray:0; stroke-width:3; }
  svg text { font-size:11px; fill:var(--fg); }
  svg path.edge { fill:none; stroke:var(--edge); stroke-width:1; marker-end:url(#arrow); }
  svg path.edge[data-fired="true"] { stroke:var(--fired); stroke-width:3; marker-end:url(#arrow-fired); }
  svg text.edge-label { font-size:8px; fill:var(--muted); }
  svg text.edge-label[data-fired="true"] { font-size:10px; fill:var(--fired); font-weight:600; }
  #transitions { max-height:180px; overflow:auto; font:12px ui-monospace, monospace; margin:0; padding-left:20px; }
  .row { display:flex; gap:12px; flex-wrap:wrap; align-items:baseline; }
  .kv b { font-variant-numeric: tabular-nums; }
</style>
</head>
<body>
<header>
  <h1>jetstate</h1>
  <label>token <input id="token" type="password" size="28" autocomplete="off"></label>
  <button id="use-token">use</button>
  <span id="who" class="muted"></span>
  <span>connection: <b id="connection-state">?</b></span>
  <span id="error"></span>
</header>
<main>
  <section><h2>Queues</h2><table id="queues"><thead><tr><th>queue</th><th>active jobs</th><th>unanswered tasks</th><th>workers</th></tr></thead><tbody></tbody></table></section>
  <section><h2>Workers and agents</h2>
    <table id="workers"><thead><tr><th>worker</th><th>runtime</th><th>queue</th><th>in flight</th><th>processed</th><th>failed</th><th>agent → target</th><th>host:pid</th><th>seen</th></tr></thead><tbody></tbody></table>
    <table id="agents" style="margin-top:8px"><thead><tr><th>agent</th><th>current</th><th>switches</th><th>skips</th><th>last switch</th></tr></thead><tbody></tbody></table>
  </section>
  <section class="wide"><h2>Jobs</h2><table id="jobs"><thead><tr><th>job</th><th>queue</th><th>status</th><th>done</th><th>failed</th><th>dead</th><th>total</th><th>rate /s</th><th>ETA</th><th></th></tr></thead><tbody></tbody></table></section>
  <section class="wide" id="job-panel" hidden>
    <h2>Job <span id="job-id"></span> <span id="job-source" class="muted"></span></h2>
    <div class="row kv">
      <span>status <b id="job-status"></b></span><span>done <b id="job-done"></b></span><span>failed <b id="job-failed"></b></span>
      <span>dead <b id="job-dead"></b></span><span>total <b id="job-total"></b></span><span>rate <b id="job-rate"></b>/s</span><span>ETA <b id="job-eta"></b></span><span>priority <b id="job-priority"></b></span>
      <span id="job-reason" class="muted"></span>
      <button id="cancel" class="danger">cancel</button>
    </div>
    <div class="charts">
      <div><h2>Job statechart</h2><svg id="job-chart"></svg></div>
      <div><h2>Connection statechart</h2><svg id="connection-chart"></svg></div>
    </div>
    <h2 style="margin-top:10px">Transitions</h2><ol id="transitions"></ol>
    <h2 style="margin-top:10px">Dead letters <button id="redrive">redrive all</button></h2>
    <table id="dead-letters"><thead><tr><th>task</th><th>deliveries</th><th>error</th><th>source</th><th>at</th><th></th></tr></thead><tbody></tbody></table>
  </section>
</main>
<script>${dashboardScript}</script>
</body>
</html>
`;
