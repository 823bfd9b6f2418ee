// Counts a cache-tests results file by the suite's own result classes.
//
// usage: node classify.mjs <package dir> <results.json> [failures.txt] [classes.tsv]
//
// failures.txt gets the failing required tests; classes.tsv every test's class and detail.
// A failing required test listed in ./superseded (the suite reversed its expectation after
// this release) counts as "superseded" instead of "fail", and is listed in failures.txt too.
//
// The suite decides each test's class (pass, fail, optional fail, ...) with
// determineTestResult in lib/display.mjs, honouring test kinds and dependencies; this script
// calls it rather than re-deriving the rules, so the counts match cache-tests.fyi.
import { readFileSync, writeFileSync } from 'fs'
import { pathToFileURL } from 'url'
import { dirname, join } from 'path'
import { fileURLToPath } from 'url'

const [pkg, resultsFile, failuresOut, classesOut] = process.argv.slice(2)
const load = (rel) => import(pathToFileURL(join(pkg, rel)).href)
const tests = (await load('tests/index.mjs')).default
const surrogate = (await load('tests/surrogate-control.mjs')).default
const display = await load('lib/display.mjs')
const suites = [...tests, surrogate]
const results = JSON.parse(readFileSync(resultsFile, 'utf8'))
const superseded = new Set(
  readFileSync(join(dirname(fileURLToPath(import.meta.url)), 'superseded'), 'utf8')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith('#'))
)

const names = {
  '✅': 'pass',
  '⛔️': 'fail',
  '⚠️': 'optional fail',
  Y: 'check yes',
  N: 'check no',
  '🔹': 'setup fail',
  '⁉️': 'harness fail',
  '⚪️': 'dependency fail',
  '↻': 'retry',
  '-': 'untested'
}
const counts = {}
const failures = []
const classes = []
let total = 0
for (const suite of suites) {
  for (const test of suite.tests) {
    if (test.browser_only === true) continue
    total++
    let kind = names[display.determineTestResult(suites, test.id, results)[2]]
    if (kind === 'fail' && superseded.has(test.id)) kind = 'superseded'
    counts[kind] = (counts[kind] || 0) + 1
    const detail = Array.isArray(results[test.id]) ? results[test.id][1] : ''
    if (kind === 'fail' || kind === 'superseded') {
      failures.push(`${kind === 'fail' ? '' : '(superseded) '}${test.id}\t${test.name}\t${detail}`)
    }
    classes.push(`${kind}\t${test.id}\t${detail}`)
  }
}
console.log(JSON.stringify({ total, counts }))
if (failuresOut) writeFileSync(failuresOut, failures.join('\n') + '\n')
if (classesOut) writeFileSync(classesOut, classes.join('\n') + '\n')
