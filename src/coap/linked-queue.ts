/**
 * An intrusive doubly linked FIFO: the nodes carry their own `prev`/`next` links, so push,
 * remove, move-to-tail and shift are O(1) and allocate nothing. The caches of the exchange
 * layer use it as their global age order (oldest at the head) while each peer's entries are
 * found through that peer's own map, so a peer's state can be dropped without a scan.
 *
 * @module
 */

/** The link fields a node carries; initialise both to undefined. A node is in one queue at most. */
export interface QueueNode<T> {
  prev: T | undefined;
  next: T | undefined;
}

/** FIFO of intrusive nodes; the head is the oldest. */
export class LinkedQueue<T extends QueueNode<T>> {
  head: T | undefined = undefined;
  tail: T | undefined = undefined;
  size = 0;

  /** True when `n` is linked into this queue (nodes are only ever in one queue). */
  has(n: T): boolean {
    return n.prev !== undefined || this.head === n;
  }

  /** Appends `n` at the tail; `n` must not be in a queue. */
  push(n: T): void {
    n.prev = this.tail;
    n.next = undefined;
    if (this.tail !== undefined) this.tail.next = n;
    else this.head = n;
    this.tail = n;
    this.size++;
  }

  /** Unlinks `n`; nothing happens when it is not in this queue. */
  remove(n: T): void {
    if (!this.has(n)) return;
    const { prev, next } = n;
    if (prev !== undefined) prev.next = next;
    else this.head = next;
    if (next !== undefined) next.prev = prev;
    else this.tail = prev;
    n.prev = undefined;
    n.next = undefined;
    this.size--;
  }

  /** Moves `n` (which must be in this queue) to the tail: "recently used". */
  touch(n: T): void {
    if (this.tail === n) return;
    this.remove(n);
    this.push(n);
  }

  /** Empties the queue, unlinking every node. */
  clear(): void {
    let n = this.head;
    while (n !== undefined) {
      const next = n.next;
      n.prev = undefined;
      n.next = undefined;
      n = next;
    }
    this.head = undefined;
    this.tail = undefined;
    this.size = 0;
  }
}
