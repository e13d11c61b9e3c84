/**
 * A small Prometheus registry (SPEC §14): counters, gauges and histograms with labels, rendered in
 * the text exposition format 0.0.4. Gauges are read at scrape time by their owner and written
 * with `gaugeText`. No dependency: the format is a few lines per family. One
 * registry per process (`metrics` in metrics/fhirhose.ts), like prom-client's default registry:
 * the import runner and the HTTP layer count into the same families.
 */
export type Labels = Record<string, string>;

type Kind = 'counter' | 'histogram';

interface Family {
  name: string;
  help: string;
  kind: Kind;
  series: Map<string, { labels: Labels; value: number; buckets?: number[]; sum?: number }>;
  bounds?: number[];
}

export interface Counter { inc(labels?: Labels, by?: number): void }
export interface Histogram { observe(labels: Labels, value: number): void }

export class Registry {
  private families: Family[] = [];

  counter(name: string, help: string): Counter {
    const family = this.add({ name, help, kind: 'counter', series: new Map() });
    return {
      inc(labels = {}, by = 1) {
        if (!(by >= 0)) return; // a counter never goes down (nor takes NaN)
        series(family, labels).value += by;
      },
    };
  }

  histogram(name: string, help: string, bounds: number[]): Histogram {
    const family = this.add({ name, help, kind: 'histogram', series: new Map(), bounds });
    return {
      observe(labels, value) {
        const s = series(family, labels);
        s.buckets ??= bounds.map(() => 0);
        bounds.forEach((b, i) => { if (value <= b) s.buckets![i]!++; });
        s.value++;
        s.sum = (s.sum ?? 0) + value;
      },
    };
  }

  /** The exposition text of the counters and histograms. */
  render(): string {
    const out: string[] = [];
    for (const f of this.families) {
      out.push(`# HELP ${f.name} ${escapeHelp(f.help)}`, `# TYPE ${f.name} ${f.kind}`);
      for (const s of f.series.values()) {
        if (f.kind !== 'histogram') {
          out.push(`${f.name}${labelText(s.labels)} ${s.value}`);
          continue;
        }
        f.bounds!.forEach((b, i) => out.push(`${f.name}_bucket${labelText({ ...s.labels, le: String(b) })} ${s.buckets?.[i] ?? 0}`));
        out.push(`${f.name}_bucket${labelText({ ...s.labels, le: '+Inf' })} ${s.value}`);
        out.push(`${f.name}_sum${labelText(s.labels)} ${s.sum ?? 0}`, `${f.name}_count${labelText(s.labels)} ${s.value}`);
      }
    }
    return out.join('\n') + '\n';
  }

  private add(family: Family): Family {
    const existing = this.families.find((f) => f.name === family.name);
    if (existing) return existing;
    this.families.push(family);
    return family;
  }
}

function series(family: Family, labels: Labels) {
  const key = JSON.stringify(Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : 1)));
  let s = family.series.get(key);
  if (!s) family.series.set(key, (s = { labels, value: 0 }));
  return s;
}

function labelText(labels: Labels): string {
  const entries = Object.entries(labels);
  if (entries.length === 0) return '';
  return `{${entries.map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"')}"`).join(',')}}`;
}

function escapeHelp(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

/** One gauge family sampled now. */
export function gaugeText(name: string, help: string, rows: { labels: Labels; value: number }[]): string {
  return [`# HELP ${name} ${escapeHelp(help)}`, `# TYPE ${name} gauge`, ...rows.map((r) => `${name}${labelText(r.labels)} ${r.value}`)].join('\n') + '\n';
}
