// The console in headless Chromium, as finance, a partner user and an admin would use it:
// single-use sign-in links; October 2026's month-end run, a statement adjusted, finalized
// and downloaded as a PDF; the usage explorer's chart and table; a partner user who sees
// its own statements and nothing else; a form without its CSRF token refused; an idle
// session sent back to sign-in. On every page: axe-core (a serious or critical violation
// fails), Tab from the top reaches "Skip to content" first, and a full-page screenshot.
// Run by scripts/browser-console.sh, which starts `partner-gateway serve` and seeds the month.
//
// Environment: BASE_URL (the gateway), FINANCE_LINK, PARTNER_LINK (canvas-sandbox,
// partner-admin), ADMIN_LINK (sign-in URLs printed by `partner-gateway console link|invite`),
// DB_PATH (the gateway's SQLite file, to age a session), SCREENSHOTS (a directory),
// PLAYWRIGHT_MODULES (the node_modules holding playwright-core and axe-core), CHROMIUM
// (the browser, default /usr/bin/chromium).
import { createRequire } from "node:module";
import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

const require = createRequire(join(process.env.PLAYWRIGHT_MODULES, "/"));
const { chromium } = require("playwright-core");
const axeSource = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");

const base = process.env.BASE_URL;
const shots = process.env.SCREENSHOTS;
mkdirSync(shots, { recursive: true });

const failures = [];
function check(ok, what) {
  console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
  if (!ok) failures.push(what);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  // Chromium's own sandbox needs user namespaces, which CI containers (root) lack.
  args: ["--no-sandbox"],
});

// A person's browser: its own cookies. Confirmation dialogs (data-confirm) are accepted.
async function person() {
  const context = await browser.newContext({ viewport: { width: 1200, height: 900 }, acceptDownloads: true });
  const page = await context.newPage();
  page.setDefaultTimeout(20000);
  page.on("dialog", (d) => d.accept());
  return page;
}

let n = 0;
let current = null;
async function shot(page, name) {
  n += 1;
  const file = join(shots, `console-${String(n).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`     screenshot ${file}`);
}

const axeSummary = [];
// axe-core on the page as it is now. The page's CSP (script-src 'self') does not apply to
// what the DevTools protocol evaluates, so axe is injected without weakening the page.
async function axe(page, name) {
  if (!(await page.evaluate(() => typeof window.axe === "object"))) {
    await page.evaluate(axeSource);
  }
  const { result, passed, review } = await page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ["violations"] });
    return {
      result: r.violations.map((v) => ({
        id: v.id,
        impact: v.impact,
        help: v.help,
        targets: v.nodes.map((x) => x.target.join(" ")),
      })),
      passed: r.passes.length,
      review: r.incomplete.map((v) => v.id),
    };
  });
  const bad = result.filter((v) => v.impact === "serious" || v.impact === "critical");
  for (const v of result) {
    const line = `${v.impact} ${v.id}: ${v.help} (${v.targets.length} node(s): ${v.targets.slice(0, 5).join(", ")})`;
    console.log(`     axe ${name}: ${line}`);
  }
  // Rules axe could not decide (say, contrast over an image) are for a person to look at.
  const undecided = review.length ? `; to review by eye: ${review.join(", ")}` : "";
  axeSummary.push(
    `${name}: ${result.length ? result.map((v) => `${v.id} (${v.impact})`).join(", ") : "none"} (${passed} rules passed${undecided})`,
  );
  check(bad.length === 0, `axe: no serious or critical violation on ${name}`);
}

// The first Tab from the top of the page lands on "Skip to content".
async function skipFirst(page, name) {
  await page.evaluate(() => {
    if (document.activeElement && document.activeElement !== document.body) document.activeElement.blur();
    window.scrollTo(0, 0);
  });
  // Focus starts from the document, as after a load.
  await page.locator("body").focus().catch(() => {});
  await page.keyboard.press("Tab");
  const focused = await page.evaluate(() => {
    const a = document.activeElement;
    return a ? `${a.tagName.toLowerCase()}|${(a.textContent || "").trim()}|${a.getAttribute("href") || ""}` : "";
  });
  check(focused === "a|Skip to content|#main", `Tab from the top of ${name} reaches "Skip to content" first (${focused})`);
}

// What every console page gets: a screenshot, axe, the skip link.
async function visited(page, name) {
  current = page;
  await shot(page, name);
  await axe(page, name);
  await skipFirst(page, name);
}

const text = async (page, sel) => ((await page.textContent(sel)) ?? "").trim();
const path = (page) => new URL(page.url()).pathname + new URL(page.url()).search;

// Send a form with its button, as a person does: the answer must be the page `to` matches.
// A refusal stops the run, quoting the page (the steps after depend on this one).
async function submit(page, button, to, what) {
  const [answer] = await Promise.all([page.waitForNavigation(), button.click()]);
  if (!to.test(path(page))) {
    const said = (await page.innerText("main")).replace(/\s+/g, " ").slice(0, 300);
    throw new Error(`${what}: the console answered ${answer ? answer.status() : "?"} at ${path(page)}: ${said}`);
  }
}

// Open a sign-in link and press the button; the console's first page of the role follows.
async function signIn(page, link, name) {
  current = page;
  await page.goto(link);
  check((await text(page, "main")).includes("It works once."), `the ${name} link opens the redeem page`);
  await visited(page, `redeem-${name}`);
  await submit(page, page.getByRole("button", { name: "Sign in", exact: true }), /^\/console\/(?!redeem)/, `the ${name} sign-in`);
}

// Run a SQL statement on the gateway's SQLite file (Python's sqlite3: always installed).
function sql(statement) {
  return execFileSync("python3", ["-c", `
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
cur = c.execute(sys.argv[2])
c.commit()
print(cur.rowcount)
`, process.env.DB_PATH, statement]).toString().trim();
}

let epicId = "";
let canvasId = "";
let canvasNumber = "";
let epicNumber = "";

try {
  // ---------------------------------------------------------------------------------
  // Sign-in page, before anyone is signed in.
  const anon = await person();
  const r = await anon.goto(`${base}/console/finance`);
  check(path(anon).startsWith("/console/signin"), `signed out, /console/finance sends to sign-in (${path(anon)}, ${r.status()})`);
  check((await text(anon, "h1")) === "Sign in to the console", "the sign-in page says what it is");
  await visited(anon, "signin");

  // ---------------------------------------------------------------------------------
  // Finance: month-end for October 2026, run, adjust, finalize, PDF, usage.
  const fin = await person();
  await signIn(fin, process.env.FINANCE_LINK, "finance");
  check(path(fin).startsWith("/console/finance"), `finance lands on month-end (${path(fin)})`);
  check((await text(fin, "header .who")).includes("Finance"), "the header shows the role Finance");
  await fin.goto(`${base}/console/finance?period=2026-10`);
  check((await text(fin, "h1")) === "Month-end 2026-10", "the month-end page for 2026-10 opens");
  check((await fin.locator("tbody tr").count()) === 4, `four agreements cover 2026-10 (${await fin.locator("tbody tr").count()})`);
  check((await text(fin, "tbody")).includes("not run"), "before the run no statement exists");
  await visited(fin, "month-end-before-run");

  await submit(fin, fin.getByRole("button", { name: "Run 2026-10", exact: true }), /\/console\/finance\?period=2026-10$/, "running 2026-10");
  check((await text(fin, "p.notice")).includes("statements computed"), "the month-end page says the run computed the statements");
  check((await fin.locator("tbody .status-draft").count()) === 4, "every agreement has a draft");
  const epicRow = fin.locator("tbody tr", { hasText: "epic-sandbox" });
  const canvasRow = fin.locator("tbody tr", { hasText: "canvas-sandbox" });
  check((await epicRow.textContent()).includes("USD"), `Epic's draft has an amount (${(await epicRow.locator("td.num").first().textContent()).trim()})`);
  epicId = (await epicRow.locator("a[href^='/console/statements/']").getAttribute("href")).split("/").pop();
  canvasId = (await canvasRow.locator("a[href^='/console/statements/']").getAttribute("href")).split("/").pop();
  await visited(fin, "month-end-after-run");

  // Epic's draft: an adjustment, then finalize with the box ticked.
  await epicRow.locator("a[href^='/console/statements/']").click();
  await fin.waitForURL(new RegExp(`/console/statements/${epicId}$`));
  check((await text(fin, "h1")).includes("draft"), "the statement opens as a draft");
  const linesBefore = await fin.locator("table tbody tr").count();
  await visited(fin, "statement-draft");
  await fin.fill("#amount", "-125.00");
  await fin.fill("#reason", "Goodwill credit for the October outage");
  await submit(fin, fin.locator("form[action$='/adjustments'] button[type=submit]"), /done=adjusted/, "adding the adjustment");
  check((await text(fin, "p.notice")) === "The adjustment was added.", "the adjustment is added");
  check((await fin.locator("table tbody tr").count()) === linesBefore + 1, "the statement has one more line");
  check((await text(fin, "table tbody")).includes("Goodwill credit for the October outage") && (await text(fin, "table tbody")).includes("-125.00 USD"), "the adjustment line shows its reason and amount");
  await visited(fin, "statement-adjusted");
  epicNumber = await fin.locator("input[name=number]").getAttribute("value");
  // The server refuses an unticked box too; the browser already does (required).
  await fin.check("#confirm");
  await submit(fin, fin.locator("form[action$='/finalize'] button[type=submit]"), /done=finalized/, "finalizing Epic's statement");
  check((await text(fin, "h1")).includes(epicNumber) && (await fin.locator("h1 .status-finalized").count()) === 1, `the statement is finalized as ${epicNumber}`);
  check((await fin.locator("form[action$='/adjustments']").count()) === 0, "a finalized statement has no adjustment form");
  await visited(fin, "statement-finalized");

  // The PDF, as the browser downloads it.
  const [download] = await Promise.all([fin.waitForEvent("download"), fin.getByRole("link", { name: "Download PDF", exact: true }).click()]);
  const pdf = readFileSync(await download.path());
  check(pdf.subarray(0, 5).toString("latin1") === "%PDF-", `the download is a PDF (${download.suggestedFilename()}, ${pdf.length} bytes)`);
  check(download.suggestedFilename().includes(epicNumber), "the PDF's file name carries the statement number");

  // Canvas's draft, finalized as it is, for the partner step.
  await fin.goto(`${base}/console/statements/${canvasId}`);
  canvasNumber = await fin.locator("input[name=number]").getAttribute("value");
  await fin.check("#confirm");
  await submit(fin, fin.locator("form[action$='/finalize'] button[type=submit]"), /done=finalized/, "finalizing Canvas's statement");
  check((await text(fin, "h1")).includes(canvasNumber), `Canvas's statement is finalized as ${canvasNumber}`);
  await fin.goto(`${base}/console/finance?period=2026-10`);
  check((await fin.locator("tbody .status-finalized").count()) === 2, "month-end shows two finalized statements");

  // The usage explorer, through its form: Canvas's active learners per day in October.
  await fin.getByRole("link", { name: "Usage", exact: true }).click();
  await fin.waitForURL(/\/console\/usage/);
  await fin.selectOption("#u-partner", ["canvas-sandbox"]);
  await fin.selectOption("#u-meter", "active_learners");
  await fin.selectOption("#u-window", "day");
  await fin.fill("#u-from", "2026-10-01");
  await fin.fill("#u-to", "2026-10-31");
  await fin.locator("form.toolbar button[type=submit]").click();
  await fin.waitForURL(/from=2026-10-01/);
  check((await fin.locator("figure svg[role=img]").count()) === 1, "the usage explorer draws an <svg> chart");
  const rows = await fin.locator("main table tbody tr").count();
  check(rows === 31, `the table under it has a row per day of October (${rows})`);
  const counted = await fin.locator("main table tbody td.num").allTextContents();
  check(counted.some((c) => /^[1-9]/.test(c.trim())), "the table shows the seeded launches");
  await visited(fin, "usage");

  // ---------------------------------------------------------------------------------
  // CSRF: the adjustment form of a draft (Northwind's) posted without its token.
  await fin.goto(`${base}/console/finance?period=2026-10`);
  const northwind = fin.locator("tbody tr", { hasText: "northwind-consulting" });
  await northwind.locator("a[href^='/console/statements/']").click();
  await fin.waitForURL(/\/console\/statements\/[^/?]+$/);
  const draftUrl = fin.url();
  const draftLines = await fin.locator("table tbody tr").count();
  await fin.fill("#amount", "999.00");
  await fin.fill("#reason", "Forged without the token");
  await fin.evaluate(() => document.querySelector("form[action$='/adjustments'] input[name=csrf]").remove());
  const [refused] = await Promise.all([
    fin.waitForNavigation(),
    fin.locator("form[action$='/adjustments'] button[type=submit]").click(),
  ]);
  check(refused.status() === 403, `a form without its csrf field is refused (${refused.status()})`);
  check((await text(fin, "main")).includes("security token"), "the refusal says the security token is missing");
  await visited(fin, "csrf-refused");
  await fin.goto(draftUrl);
  check((await fin.locator("table tbody tr").count()) === draftLines && !(await text(fin, "main")).includes("Forged without the token"), "nothing was added to the draft");

  // ---------------------------------------------------------------------------------
  // Partner: Canvas's administrator, by invitation.
  const partner = await person();
  await signIn(partner, process.env.PARTNER_LINK, "partner");
  check(path(partner) === "/console/partner", `the partner user lands on its statements (${path(partner)})`);
  const mine = await text(partner, "main");
  check(mine.includes(canvasNumber), `it sees its own statement ${canvasNumber}`);
  check(!mine.includes(epicNumber) && !mine.includes("epic-sandbox"), "it sees nothing of Epic");
  check((await text(partner, "header .who")).includes("Partner administrator"), "the header shows the partner role");
  await visited(partner, "partner-statements");
  await partner.locator(`a[href='/console/statements/${canvasId}']`).first().click();
  await partner.waitForURL(new RegExp(`/console/statements/${canvasId}$`));
  check((await partner.locator("form[action$='/void'], form[action$='/finalize']").count()) === 0, "its statement page has no finance forms");
  await visited(partner, "partner-statement");
  const other = await partner.goto(`${base}/console/statements/${epicId}`);
  check(other.status() === 404, `Epic's statement answers 404 to it (${other.status()})`);
  check(!(await text(partner, "main")).includes("Epic"), "the 404 page names nothing of Epic");
  await visited(partner, "partner-404");
  // Its webhook endpoint, like Svix's App Portal: a receiver on loopback that fails the
  // first delivery (500) and takes the replay.
  const received = [];
  const receiver = createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      received.push({ headers: req.headers, body });
      if (received.length === 1) {
        res.writeHead(500, { "content-type": "text/plain" });
        res.end("receiver down for maintenance");
      } else {
        res.writeHead(204);
        res.end();
      }
    });
  });
  await new Promise((ok) => receiver.listen(0, "127.0.0.1", ok));
  const hook = `http://127.0.0.1:${receiver.address().port}/hooks/gateway`;
  const waitFor = async (count) => {
    for (let i = 0; i < 200 && received.length < count; i++) await new Promise((r) => setTimeout(r, 100));
    return received.length >= count;
  };
  await partner.goto(`${base}/console/partner`);
  await partner.getByRole("link", { name: "Webhooks", exact: true }).click();
  await partner.waitForURL(/\/console\/partner\/webhooks$/);
  await visited(partner, "webhooks");
  await partner.fill("#url", hook);
  await partner.fill("#description", "Canvas sync");
  await partner.getByLabel("webhook.test").check();
  await submit(partner, partner.getByRole("button", { name: "Add endpoint" }), /\/console\/partner\/webhooks$/, "adding an endpoint");
  const secret = await partner.inputValue("#key");
  check(secret.startsWith("whsec_"), "the new endpoint's signing secret is shown once");
  await visited(partner, "webhook-secret");
  await partner.getByRole("link", { name: "Go to the endpoint" }).click();
  await partner.waitForURL(/\/console\/partner\/webhooks\/ep_/);
  const endpointUrl = partner.url();
  await submit(partner, partner.getByRole("button", { name: "Send a test event" }), /\/console\/partner\/webhooks\/ep_/, "sending a test event");
  check(await waitFor(1), "the test event reaches the receiver");
  const first = received[0];
  if (first) {
    const key = Buffer.from(secret.slice("whsec_".length), "base64");
    const signed = `${first.headers["webhook-id"]}.${first.headers["webhook-timestamp"]}.${first.body}`;
    const want = Buffer.from(createHmac("sha256", key).update(signed).digest("base64"));
    const sigs = String(first.headers["webhook-signature"] ?? "").split(" ").map((s) => Buffer.from(s.replace(/^v1,/, "")));
    check(sigs.some((s) => s.length === want.length && timingSafeEqual(s, want)), "its Standard Webhooks signature verifies with the secret shown");
    check(JSON.parse(first.body).type === "webhook.test", "it is a webhook.test message");
  }
  let logged = "";
  for (let i = 0; i < 100 && !logged.includes("HTTP 500"); i++) {
    await partner.goto(endpointUrl);
    logged = await text(partner, "main");
    if (!logged.includes("HTTP 500")) await new Promise((r) => setTimeout(r, 200));
  }
  // Opened without a click: a click would move the Tab starting point (checked below).
  await partner.evaluate(() => document.querySelectorAll("details").forEach((d) => (d.open = true)));
  check(logged.includes("HTTP 500") && (await text(partner, "main")).includes("receiver down for maintenance"), "the delivery log shows the failed attempt with the receiver's answer");
  await visited(partner, "webhook-delivery-log");
  await submit(partner, partner.getByRole("button", { name: /^Replay message msg_/ }).first(), /\/console\/partner\/webhooks\/ep_/, "replaying the message");
  check(await waitFor(2), "the replayed message reaches the receiver");
  check(received[1]?.headers["webhook-id"] === first?.headers["webhook-id"], "the replay carries the same webhook-id");
  let delivered = false;
  for (let i = 0; i < 100 && !delivered; i++) {
    await partner.goto(endpointUrl);
    delivered = (await text(partner, "main table")).includes("delivered");
    if (!delivered) await new Promise((r) => setTimeout(r, 200));
  }
  check(delivered, "the delivery log shows it delivered");
  await visited(partner, "webhook-replayed");
  receiver.close();

  const staff = await partner.goto(`${base}/console/finance`);
  check(staff.status() === 403, `/console/finance answers 403 to it (${staff.status()})`);
  await visited(partner, "partner-403");

  // ---------------------------------------------------------------------------------
  // Admin: invitations and the audit log.
  const admin = await person();
  await signIn(admin, process.env.ADMIN_LINK, "admin");
  // The admin's desk: one "Admin" entry in the header, its pages in a second row.
  await admin.getByRole("link", { name: "Admin", exact: true }).click();
  await admin.waitForURL(/\/console\/admin\/partners$/);
  check((await text(admin, "main table")).includes("epic-sandbox"), "the partners overview lists the partners");
  await visited(admin, "admin-partners");
  for (const [name, url, shot] of [
    ["API keys", /\/console\/admin\/keys$/, "admin-keys"],
    ["Dead jobs", /\/console\/admin\/jobs$/, "admin-jobs"],
    ["LTI registrations", /\/console\/admin\/registrations$/, "admin-registrations"],
    ["SSO connections", /\/console\/admin\/sso$/, "admin-sso"],
  ]) {
    await admin.getByRole("navigation", { name: "Admin" }).getByRole("link", { name, exact: true }).click();
    await admin.waitForURL(url);
    await visited(admin, shot);
  }
  await admin.getByRole("link", { name: "Invitations", exact: true }).click();
  await admin.waitForURL(/\/console\/admin\/invitations$/);
  check((await text(admin, "main table")).includes("ana@canvas.example"), "the invitations page lists the partner's invitation");
  await visited(admin, "invitations");
  await admin.getByRole("link", { name: "Audit log", exact: true }).click();
  await admin.waitForURL(/\/console\/admin\/audit$/);
  const log = await text(admin, "main table");
  check(["statement.finalize", "statement.adjust", "console.signin"].every((a) => log.includes(a)), "the audit log shows the sign-ins, the adjustment and the finalizations");
  await visited(admin, "audit-log");

  // ---------------------------------------------------------------------------------
  // An idle session: finance's, last used 31 minutes ago (the timeout is 30).
  const lastSeen = (Date.now() - 31 * 60 * 1000) * 1000;
  const aged = sql(`UPDATE console_sessions SET last_seen_at_us = ${lastSeen} WHERE role = 'finance' AND ended_at_us IS NULL`);
  check(aged === "1", `finance's session is aged by 31 minutes (${aged} row)`);
  await fin.goto(`${base}/console/finance?period=2026-10`);
  check(path(fin).startsWith("/console/signin?") && path(fin).includes("expired=1"), `an idle session is sent to sign-in (${path(fin)})`);
  check((await text(fin, "main")).includes("Your session ended"), "the sign-in page says the session ended");
  await visited(fin, "session-expired");
  const again = await fin.goto(`${base}/console/usage`);
  check(path(fin).startsWith("/console/signin"), `and stays signed out on every page (${again.status()} ${path(fin)})`);
  // The others are still signed in.
  await admin.goto(`${base}/console/admin/audit`);
  check(path(admin) === "/console/admin/audit", "the admin's session is untouched");
} catch (e) {
  failures.push(String(e));
  console.log(`FAIL ${e}`);
  try {
    if (current) await shot(current, "failure");
  } catch {}
} finally {
  await browser.close();
}

console.log("axe violations per page (any impact):");
for (const line of axeSummary) console.log(`     ${line}`);
if (failures.length) {
  console.log(`console.mjs: ${failures.length} check(s) failed`);
  process.exit(1);
}
console.log("console.mjs: every check passed");
