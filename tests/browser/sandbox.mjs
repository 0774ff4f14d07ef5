// The sandbox click-through in headless Chromium: from the start page, the EHR launch
// (Epic) and the LTI launches (Canvas, Moodle) to the sample app, whose page must show the
// context the gateway handed over; a patient read and a grade on the way; then deep
// linking both ways, OIDC and SAML sign-ins, the webhooks received and the usage recorded;
// the console signed in as finance through the sandbox's IdP; a screenshot of every page.
// Run by scripts/browser-sandbox.sh, which starts `partner-gateway sandbox`.
//
// Environment: START_URL (the sandbox start page), SCREENSHOTS (a directory),
// PLAYWRIGHT_MODULES (the node_modules holding playwright-core), CHROMIUM (the browser,
// default /usr/bin/chromium).
import { createRequire } from "node:module";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const require = createRequire(join(process.env.PLAYWRIGHT_MODULES, "/"));
const { chromium } = require("playwright-core");

const start = process.env.START_URL;
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
let n = 0;
const page = await (await browser.newContext({ viewport: { width: 1200, height: 900 } })).newPage();
page.setDefaultTimeout(20000);
async function shot(name) {
  n += 1;
  const file = join(shots, `${String(n).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`     screenshot ${file}`);
}
const text = async (sel) => ((await page.textContent(sel)) ?? "").trim();

try {
  await page.goto(start);
  check((await page.title()).includes("sandbox"), "the start page opens");
  for (const id of ["ehr-epic", "lti-canvas", "lti-moodle", "dl-canvas", "sso-oidc", "sso-saml", "webhooks", "console"]) {
    check((await page.locator(`#${id}`).count()) === 1, `the start page offers #${id}`);
  }
  await shot("start-page");

  // EHR launch from Epic: gateway -> EHR authorize -> callback -> app.
  await page.click("#ehr-epic");
  await page.waitForURL(/\/app\/[0-9a-z_-]+/);
  check((await text("#context-kind")) === "smart", "the Epic launch reaches the app as a SMART launch");
  check((await text("#partner")) === "sbx-epic", "the app names the sandbox partner sbx-epic");
  check((await text("#sandbox")) === "true", "the launch context says sandbox: true");
  const patient = await text("#patient");
  check(patient.length > 0, `the app shows the launch patient (${patient})`);
  await shot("ehr-epic-app");
  await page.click("#read-patient");
  await page.waitForSelector("#patient-name");
  check((await text("#patient-name")).length > 0, `the FHIR proxy read the patient (${await text("#patient-name")})`);
  await shot("ehr-epic-patient");

  // LTI launch from Canvas: login initiation -> platform auth -> launch -> app.
  await page.goto(start);
  await page.click("#lti-canvas");
  await page.waitForURL(/\/app\/[0-9a-z_-]+/);
  check((await text("#context-kind")) === "lti", "the Canvas launch reaches the app as an LTI launch");
  check((await text("#partner")) === "sbx-canvas", "the app names the sandbox partner sbx-canvas");
  check((await text("#course")) === "sandbox-course-101", `the app shows the course (${await text("#course")})`);
  await shot("lti-canvas-app");
  // A grade posted from the app, seen in the LMS gradebook.
  await page.fill("#score", "9");
  await page.click("#post-grade");
  await page.waitForSelector("#score-status");
  check((await text("#score-status")) === "delivered", `the grade was delivered (${await text("#score-status")})`);
  await shot("lti-canvas-grade");
  await page.click("#open-gradebook");
  await page.waitForSelector("#gradebook");
  check((await text("#gradebook")).includes("sandbox-learner-1"), "the Canvas gradebook shows the learner's score");
  await shot("canvas-gradebook");

  // LTI launch from Moodle.
  await page.goto(start);
  await page.click("#lti-moodle");
  await page.waitForURL(/\/app\/[0-9a-z_-]+/);
  check((await text("#partner")) === "sbx-moodle", "the Moodle launch reaches the app");
  check((await text("#course")) === "sandbox-course-101", "the app shows the Moodle course");
  await shot("lti-moodle-app");

  // Deep linking, both ways: Canvas through the gateway's picker, Moodle where the app
  // chooses; each ends on the LMS's own "Content added" page.
  await page.goto(start);
  await page.click("#dl-canvas");
  await page.waitForSelector("input[name=item]");
  await page.locator("input[name=item]").first().check();
  await shot("dl-canvas-picker");
  await page.click("button[type=submit]");
  await page.waitForFunction(() => document.title === "Content added");
  check((await text("body")).includes("Unit 1 quiz"), "Canvas took the item picked in the gateway's picker");
  await shot("dl-canvas-content-added");
  await page.goto(start);
  await page.click("#dl-moodle");
  await page.waitForURL(/\/app\/[0-9a-z_-]+/);
  check((await text("#message-type")) === "LtiDeepLinkingRequest", "the Moodle deep linking launch reaches the app");
  await page.click("#return-selection");
  await page.waitForFunction(() => document.title === "Content added");
  check((await text("body")).includes("chapter 1"), "Moodle took the app's selection");
  await shot("dl-moodle-content-added");

  // Single sign-on, OIDC and SAML, to the same app.
  await page.goto(start);
  await page.click("#sso-oidc");
  await page.waitForURL(/\/app\/[0-9a-z_-]+/);
  check((await text("#context-kind")) === "sso" && (await text("#protocol")) === "oidc", "the OIDC sign-in reaches the app");
  check((await text("#email")) === "ada@okta.sandbox.example", "the app shows the OIDC user's email");
  await shot("sso-oidc-app");
  await page.goto(start);
  await page.click("#sso-saml");
  await page.waitForURL(/\/app\/[0-9a-z_-]+/);
  check((await text("#protocol")) === "saml" && (await text("#partner")) === "sbx-shibboleth", "the SAML sign-in reaches the app");
  await shot("sso-saml-app");

  // The webhooks the launches and the grade sent, verified at the receiver.
  await page.goto(start);
  await page.click("#webhooks");
  await page.waitForSelector("#webhooks");
  const hooks = await text("#webhooks");
  check(hooks.includes("launch.completed") && hooks.includes("grade.delivered"), "the receiver got launch.completed and grade.delivered");
  check((await page.locator("#webhooks td.bad").count()) === 0 && hooks.includes("signature valid"), "every webhook's signature verified");
  await shot("webhooks");

  // The usage each flow recorded, on the start page.
  await page.goto(start);
  const usage = await text("#usage");
  check(
    ["smart.launch", "fhir.request", "lti.launch", "lti.grade_posted", "sso.login", "webhook.delivered"].every((t) => usage.includes(t)),
    "the start page shows the usage each flow recorded",
  );
  await page.locator("#usage").scrollIntoViewIfNeeded();
  await shot("start-page-usage");

  // The console, signed in as finance through the sandbox's Okta: month-end (sandbox
  // partners are never billed: no agreement to list), then the simulated partners' usage.
  await page.goto(start);
  await page.click("#console");
  await page.waitForURL(/\/console\/finance/);
  check((await text("h1")).startsWith("Month-end"), `the console link lands on month-end (${await text("h1")})`);
  check((await text("header .who span")).includes("Finance"), `signed in as Finance (${await text("header .who span")})`);
  await shot("console-month-end");
  await page.getByRole("link", { name: "Usage" }).click();
  await page.waitForURL(/\/console\/usage/);
  await page.selectOption("#u-partner", ["sbx-canvas", "sbx-epic"]);
  await page.selectOption("#u-meter", "sandbox_events");
  await page.selectOption("#u-window", "week");
  await page.locator("form.toolbar button[type=submit]").click();
  await page.waitForURL(/partner=sbx-canvas/);
  const charted = await page.locator("main table tbody td.num").allTextContents();
  check(
    (await page.locator("figure svg").count()) === 1 && charted.some((c) => /^[1-9]/.test(c.trim())),
    "the console's usage explorer charts the sandbox partners' usage",
  );
  await shot("console-usage");
} catch (e) {
  failures.push(String(e));
  console.log(`FAIL ${e}`);
  try {
    await shot("failure");
  } catch {}
} finally {
  await browser.close();
}

if (failures.length) {
  console.log(`sandbox.mjs: ${failures.length} check(s) failed`);
  process.exit(1);
}
console.log("sandbox.mjs: every check passed");
