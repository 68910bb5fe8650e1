import { chromium } from "playwright-core";
const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--headless","--no-sandbox","--disable-gpu"] });
const page = await browser.newPage();
page.on("console", (m) => { console.log("console:", m.type(), m.text().slice(0, 3000)); });
page.on("pageerror", (e) => console.log("pageerror:", e.stack?.slice(0, 6000)));
await page.goto(process.argv[2]);
await page.waitForTimeout(4000);
console.log((await page.locator("body").innerText()).slice(0, 300));
await browser.close();
